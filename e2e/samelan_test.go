package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"glow/e2e/lab"
)

// TestSubnetRouterSameLAN (issue 16): the home NAS offers its LAN; the
// home laptop, on that same LAN, keeps it direct. Its kernel's connected
// route stays (before: glow's route through the tunnel replaced it, so
// the laptop reached its own LAN through the NAS and its path to the NAS
// went into the tunnel it carries), it reaches the printer from its own
// LAN address, and its path to the NAS stays direct over the LAN. The
// cafe laptop, which does take the prefix, reaches the printer through
// the NAS and never uses an address inside that prefix as a path to
// anyone (the NAS's LAN address is among its endpoints).
func TestSubnetRouterSameLAN(t *testing.T) {
	l := lab.New(t)
	needGlow(t)
	vpsH := publicHost(l, "vps")
	homeLAN := l.Bridge("home-lan")
	nasH, laptopH, printerH := l.Host("nas"), l.Host("laptop"), l.Host("printer")
	nasLAN4 := homeLAN.Attach(nasH)
	laptop4 := homeLAN.Attach(laptopH)
	printer4 := homeLAN.Attach(printerH)
	l.Router("home-gw", homeLAN, lab.EasyNAT)
	_, cafeH := siteHost(l, "cafe", lab.EasyNAT)
	routeServe(t, printerH, 8080)

	vps := newNode(t, vpsH, "vps")
	nas := newNode(t, nasH, "nas")
	laptop := newNode(t, laptopH, "laptop")
	cafe := newNode(t, cafeH, "cafe")
	vps.up("--user", "alice", "--name", "vps")
	nas.up("--name", "nas", "--join", vps.invite(), "--advertise-routes", homeLAN.V4.String())
	laptop.up("--name", "laptop", "--join", vps.invite())
	cafe.up("--name", "cafe", "--join", vps.invite())

	// The cafe takes the prefix: the offer has spread.
	if err := waitFor(reachTimeout, 250*time.Millisecond, func() error { return routeCurl(cafeH, printer4, 8080, nasLAN4) }); err != nil {
		t.Fatalf("cafe -> printer %s through nas: %v\n%s", printer4, err, routeStatus(cafe))
	}
	// By now the laptop knows the offer too (the same records).
	if _, _, err := waitPeer(laptop, "nas", reachTimeout, func(p *peerStatus) error {
		if p.Path != "direct" || !strings.HasPrefix(p.Endpoint, nasLAN4.String()+":") {
			return fmt.Errorf("path %s %s, want direct at %v", p.Path, p.Endpoint, nasLAN4)
		}
		return nil
	}); err != nil {
		t.Errorf("laptop's path to nas: %v\n%s", err, routeStatus(laptop))
	}
	if dev := routeDev(t, laptopH, printer4); strings.HasPrefix(dev, "glow") {
		t.Errorf("laptop routes its own LAN's printer %v through %s, want its LAN interface", printer4, dev)
	}
	if err := routeCurl(laptopH, printer4, 8080, laptop4); err != nil {
		t.Errorf("laptop -> printer over its own LAN: %v", err)
	}
	st, err := laptop.status()
	if err != nil {
		t.Fatal(err)
	}
	if p := peerNamed(st, "nas"); p == nil || len(p.Routes) != 0 {
		t.Errorf("laptop routes %v through nas, want nothing (it is on that LAN)", p)
	}

	// The cafe's paths: none inside the prefix it routes into the tunnel.
	st, err = cafe.status()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range st.Peers {
		if ap, err := netip.ParseAddrPort(p.Endpoint); err == nil && homeLAN.V4.Contains(ap.Addr()) {
			t.Errorf("cafe's path to %s is %v, inside %v, which it routes through nas", p.Name, ap, homeLAN.V4)
		}
	}
}

// routeDev is the interface h's kernel sends packets for dst out of.
func routeDev(t *testing.T, h *lab.Host, dst netip.Addr) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := h.Run(ctx, "ip", "-o", "route", "get", dst.String())
	if err != nil {
		t.Fatalf("%s: ip route get %v: %v", h, dst, err)
	}
	f := strings.Fields(res.Stdout)
	for i := 0; i+1 < len(f); i++ {
		if f[i] == "dev" {
			return f[i+1]
		}
	}
	t.Fatalf("%s: ip route get %v: no dev in %q", h, dst, res.Stdout)
	return ""
}
