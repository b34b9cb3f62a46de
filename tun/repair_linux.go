package tun

import (
	"errors"
	"fmt"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"glow/tun/firewall"
)

// RepairRouting undoes, in the calling thread's network namespace, what a
// crashed daemon's SetForwarding and SetExit left: the router table (if
// its interface is gone), the exit ip rules (if glow's table holds no
// route: no live daemon uses them) and the forwarding sysctls saved in
// sysctlFile. It reports whether it changed anything.
func RepairRouting(sysctlFile string) (bool, error) {
	changed, err := firewall.RemoveStaleRouter()
	h, herr := netlink.NewHandle(unix.NETLINK_ROUTE)
	if herr != nil {
		return changed, errors.Join(err, fmt.Errorf("tun: netlink: %w", herr))
	}
	defer h.Close()
	live := false
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		rs, lerr := h.RouteListFiltered(fam, &netlink.Route{Table: ExitTable}, netlink.RT_FILTER_TABLE)
		live = live || lerr == nil && len(rs) > 0
	}
	if !live {
		for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
			for _, r := range exitRules(fam) {
				for range 16 {
					if h.RuleDel(r) != nil {
						break
					}
					changed = true
				}
			}
		}
	}
	if b, rerr := restoreSysctlsChanged(sysctlFile); rerr != nil {
		err = errors.Join(err, rerr)
	} else {
		changed = changed || b
	}
	return changed, err
}
