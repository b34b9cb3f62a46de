package tun

import (
	"errors"
	"fmt"

	"glow/tun/firewall"
)

// RepairRouting undoes, in the calling thread's network namespace, what a
// crashed daemon's SetForwarding and SetExit left: the router table (if
// its interface is gone), the exit ip rules (if glow's table holds no
// route: no live daemon uses them) and the forwarding sysctls saved in
// sysctlFile. It reports whether it changed anything.
func RepairRouting(sysctlFile string) (bool, error) {
	changed, err := firewall.RemoveStaleRouter()
	h, herr := dialRtnl()
	if herr != nil {
		return changed, errors.Join(err, fmt.Errorf("tun: netlink: %w", herr))
	}
	defer h.Close()
	rs, lerr := h.routes(func(r route) bool { return r.Table == ExitTable })
	if live := lerr == nil && len(rs) > 0; !live {
		for _, fam := range families {
			for _, r := range exitRules(fam) {
				for range 16 {
					if h.ruleDel(r) != nil {
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
