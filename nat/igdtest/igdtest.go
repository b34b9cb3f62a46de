package igdtest

import (
	"bytes"
	"encoding/binary"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Well-known ports that port mapping clients send to.
const (
	PXPPort  = 5351 // NAT-PMP and PCP
	SSDPPort = 1900 // UPnP discovery
)

// Options configures a Gateway. The zero value serves nothing on
// 127.0.0.1's well-known ports.
type Options struct {
	// Addr is the address to listen on (UDP for NAT-PMP/PCP and SSDP,
	// TCP for UPnP's HTTP). The zero value means 127.0.0.1.
	Addr netip.Addr
	// PXPPort and SSDPPort override the UDP ports; zero means the
	// well-known ones. HTTP always uses a free port.
	PXPPort, SSDPPort uint16
	// AnyPorts binds free UDP ports instead (see PXPAddr, SSDPAddr), for
	// clients that can be pointed at them.
	AnyPorts bool

	// PMP, PCP and UPnP switch each protocol on.
	PMP, PCP, UPnP bool

	// ExternalIP is the public address the gateway reports. The zero value
	// means 198.51.100.7.
	ExternalIP netip.Addr

	// Logf, if not nil, receives one line per request.
	Logf func(format string, args ...any)
}

// Counters counts requests received, per protocol and operation. A
// request to a switched-off protocol counts in its protocol's Recv field
// and in Ignored only.
type Counters struct {
	PMPRecv       int // NAT-PMP datagrams (version 0)
	PMPPublicAddr int // external address requests
	PMPMap        int // UDP or TCP map requests with a lifetime
	PMPDelete     int // map requests with lifetime 0

	PCPRecv     int // PCP datagrams (version 2)
	PCPAnnounce int
	PCPMap      int // MAP requests with a lifetime
	PCPDelete   int // MAP requests with lifetime 0

	SSDPRecv        int // datagrams on the SSDP port
	SSDPSearch      int // M-SEARCH requests answered or not
	UPnPDescription int // GET of the device description
	UPnPAdd         int // AddPortMapping calls
	UPnPDelete      int // DeletePortMapping calls
	UPnPExternalIP  int // GetExternalIPAddress calls
	UPnPOther       int // other SOAP actions (GetStatusInfo...)

	Ignored int // requests to a protocol that is off, or malformed
}

// Mapping is one port mapping the gateway has granted.
type Mapping struct {
	Proto    string // "pmp", "pcp" or "upnp"
	Internal netip.AddrPort
	External netip.AddrPort
	Lifetime time.Duration // 0 for a UPnP permanent lease
}

// Gateway is a running fake gateway. Its methods are safe for concurrent
// use.
type Gateway struct {
	opts    Options
	start   time.Time
	pxp     *net.UDPConn // NAT-PMP and PCP
	ssdp    *net.UDPConn
	httpLn  net.Listener
	httpSrv *http.Server
	wg      sync.WaitGroup

	mu       sync.Mutex // guards the following
	counters Counters
	mappings []Mapping
	closed   bool
}

// New starts a Gateway. All its sockets are bound even for protocols that
// are off, so that those protocols' requests are counted (and a port in use
// is reported at once).
func New(opts Options) (*Gateway, error) {
	if !opts.Addr.IsValid() {
		opts.Addr = netip.AddrFrom4([4]byte{127, 0, 0, 1})
	}
	if !opts.Addr.Is4() {
		return nil, errors.New("igdtest: Options.Addr must be IPv4")
	}
	if opts.PXPPort == 0 && !opts.AnyPorts {
		opts.PXPPort = PXPPort
	}
	if opts.SSDPPort == 0 && !opts.AnyPorts {
		opts.SSDPPort = SSDPPort
	}
	if !opts.ExternalIP.IsValid() {
		opts.ExternalIP = netip.AddrFrom4([4]byte{198, 51, 100, 7})
	}
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	g := &Gateway{opts: opts, start: time.Now()}
	var err error
	if g.pxp, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(opts.Addr, opts.PXPPort))); err != nil {
		return nil, fmt.Errorf("igdtest: NAT-PMP/PCP port: %w", err)
	}
	if g.ssdp, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(opts.Addr, opts.SSDPPort))); err != nil {
		g.pxp.Close()
		return nil, fmt.Errorf("igdtest: SSDP port: %w", err)
	}
	if g.httpLn, err = net.Listen("tcp4", netip.AddrPortFrom(opts.Addr, 0).String()); err != nil {
		g.pxp.Close()
		g.ssdp.Close()
		return nil, fmt.Errorf("igdtest: HTTP: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /rootDesc.xml", g.serveDescription)
	mux.HandleFunc("POST "+controlPath, g.serveControl)
	g.httpSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}

	g.wg.Add(3)
	go func() { defer g.wg.Done(); g.servePXP() }()
	go func() { defer g.wg.Done(); g.serveSSDP() }()
	go func() { defer g.wg.Done(); g.httpSrv.Serve(g.httpLn) }()
	return g, nil
}

// Close stops the gateway and waits for its goroutines.
func (g *Gateway) Close() error {
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return nil
	}
	g.closed = true
	g.mu.Unlock()
	g.pxp.Close()
	g.ssdp.Close()
	g.httpSrv.Close()
	g.wg.Wait()
	return nil
}

// Addr returns the address the gateway listens on.
func (g *Gateway) Addr() netip.Addr { return g.opts.Addr }

// PXPAddr returns the NAT-PMP/PCP address the gateway listens on.
func (g *Gateway) PXPAddr() netip.AddrPort { return g.pxp.LocalAddr().(*net.UDPAddr).AddrPort() }

// SSDPAddr returns the SSDP address the gateway listens on.
func (g *Gateway) SSDPAddr() netip.AddrPort { return g.ssdp.LocalAddr().(*net.UDPAddr).AddrPort() }

// ExternalIP returns the public address the gateway reports.
func (g *Gateway) ExternalIP() netip.Addr { return g.opts.ExternalIP }

// Counters returns a snapshot of the request counters.
func (g *Gateway) Counters() Counters {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.counters
}

// Mappings returns the mappings currently granted, oldest first.
func (g *Gateway) Mappings() []Mapping {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.mappings)
}

func (g *Gateway) count(f func(c *Counters)) {
	g.mu.Lock()
	f(&g.counters)
	g.mu.Unlock()
}

func (g *Gateway) epoch() uint32 { return uint32(time.Since(g.start)/time.Second) + 1 }

// addMapping records a mapping for internal, keeping the requested
// external port when it is free (else the internal port, else the next
// free one), and returns the external port. A repeated request for the
// same internal endpoint refreshes its mapping.
func (g *Gateway) addMapping(proto string, internal netip.AddrPort, want uint16, lifetime time.Duration) uint16 {
	g.mu.Lock()
	defer g.mu.Unlock()
	for i, m := range g.mappings {
		if m.Proto == proto && m.Internal == internal {
			g.mappings[i].Lifetime = lifetime
			return m.External.Port()
		}
	}
	used := func(p uint16) bool {
		return slices.ContainsFunc(g.mappings, func(m Mapping) bool { return m.External.Port() == p })
	}
	port := want
	if port == 0 || used(port) {
		port = internal.Port()
	}
	for port == 0 || used(port) {
		port++
	}
	g.mappings = append(g.mappings, Mapping{proto, internal, netip.AddrPortFrom(g.opts.ExternalIP, port), lifetime})
	return port
}

// deleteMapping removes the mappings of proto matching match and reports
// whether there was one.
func (g *Gateway) deleteMapping(proto string, match func(Mapping) bool) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	n := len(g.mappings)
	g.mappings = slices.DeleteFunc(g.mappings, func(m Mapping) bool { return m.Proto == proto && match(m) })
	return len(g.mappings) < n
}

// servePXP answers NAT-PMP and PCP, which share a port and are told apart
// by the version byte.
func (g *Gateway) servePXP() {
	buf := make([]byte, 1500)
	for {
		n, src, err := g.pxp.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
		var resp []byte
		switch {
		case n >= 2 && buf[0] == 0:
			resp = g.handlePMP(buf[:n], src)
		case n >= 1 && buf[0] == 2:
			resp = g.handlePCP(buf[:n], src)
		default:
			g.count(func(c *Counters) { c.Ignored++ })
		}
		if resp != nil {
			g.pxp.WriteToUDPAddrPort(resp, src)
		}
	}
}

// NAT-PMP (RFC 6886 section 3).
const (
	pmpOpPublicAddr = 0
	pmpOpMapUDP     = 1
	pmpOpMapTCP     = 2
	pmpOpReply      = 0x80
)

func (g *Gateway) handlePMP(pkt []byte, src netip.AddrPort) []byte {
	op := pkt[1]
	ok := g.opts.PMP
	switch {
	case op == pmpOpPublicAddr && len(pkt) == 2:
		g.count(func(c *Counters) {
			c.PMPRecv++
			c.PMPPublicAddr++
			c.Ignored += b2i(!ok)
		})
		if !ok {
			return nil
		}
		g.opts.Logf("igdtest: NAT-PMP public address request from %v", src)
		resp := make([]byte, 12)
		resp[1] = pmpOpReply | pmpOpPublicAddr
		binary.BigEndian.PutUint32(resp[4:], g.epoch())
		ip := g.opts.ExternalIP.As4()
		copy(resp[8:], ip[:])
		return resp
	case (op == pmpOpMapUDP || op == pmpOpMapTCP) && len(pkt) == 12:
		internal := netip.AddrPortFrom(src.Addr(), binary.BigEndian.Uint16(pkt[4:]))
		want := binary.BigEndian.Uint16(pkt[6:])
		lifetime := binary.BigEndian.Uint32(pkt[8:])
		g.count(func(c *Counters) {
			c.PMPRecv++
			if lifetime == 0 {
				c.PMPDelete++
			} else {
				c.PMPMap++
			}
			c.Ignored += b2i(!ok)
		})
		if !ok {
			return nil
		}
		g.opts.Logf("igdtest: NAT-PMP map %v want %d lifetime %d from %v", internal, want, lifetime, src)
		resp := make([]byte, 16)
		resp[1] = pmpOpReply | op
		binary.BigEndian.PutUint32(resp[4:], g.epoch())
		binary.BigEndian.PutUint16(resp[8:], internal.Port())
		if lifetime == 0 {
			g.deleteMapping("pmp", func(m Mapping) bool { return m.Internal == internal })
			return resp // external port and lifetime 0 (RFC 6886 3.4)
		}
		ext := g.addMapping("pmp", internal, want, time.Duration(lifetime)*time.Second)
		binary.BigEndian.PutUint16(resp[10:], ext)
		binary.BigEndian.PutUint32(resp[12:], lifetime)
		return resp
	}
	g.count(func(c *Counters) { c.PMPRecv++; c.Ignored++ })
	return nil
}

// PCP (RFC 6887 sections 7 and 11).
const (
	pcpVersion    = 2
	pcpOpAnnounce = 0
	pcpOpMap      = 1
	pcpOpReply    = 0x80
	pcpHeaderLen  = 24
	pcpMapLen     = 36
)

func (g *Gateway) handlePCP(pkt []byte, src netip.AddrPort) []byte {
	if len(pkt) < pcpHeaderLen || len(pkt) > 1100 || len(pkt)%4 != 0 {
		g.count(func(c *Counters) { c.PCPRecv++; c.Ignored++ })
		return nil
	}
	ok := g.opts.PCP
	lifetime := binary.BigEndian.Uint32(pkt[4:])
	switch {
	case pkt[1] == pcpOpAnnounce:
		g.count(func(c *Counters) { c.PCPRecv++; c.PCPAnnounce++; c.Ignored += b2i(!ok) })
		if !ok {
			return nil
		}
		g.opts.Logf("igdtest: PCP announce from %v", src)
		return g.pcpHeader(pcpOpAnnounce, 0)
	case pkt[1] == pcpOpMap && len(pkt) >= pcpHeaderLen+pcpMapLen:
		g.count(func(c *Counters) {
			c.PCPRecv++
			if lifetime == 0 {
				c.PCPDelete++
			} else {
				c.PCPMap++
			}
			c.Ignored += b2i(!ok)
		})
		if !ok {
			return nil
		}
		client := netip.AddrFrom16([16]byte(pkt[8:24])).Unmap()
		mapOp := pkt[pcpHeaderLen : pcpHeaderLen+pcpMapLen]
		internal := netip.AddrPortFrom(client, binary.BigEndian.Uint16(mapOp[16:]))
		want := binary.BigEndian.Uint16(mapOp[18:])
		g.opts.Logf("igdtest: PCP map %v want %d lifetime %d from %v", internal, want, lifetime, src)
		resp := append(g.pcpHeader(pcpOpMap, lifetime), mapOp...)
		var ext uint16
		if lifetime == 0 {
			g.deleteMapping("pcp", func(m Mapping) bool { return m.Internal == internal })
		} else {
			ext = g.addMapping("pcp", internal, want, time.Duration(lifetime)*time.Second)
		}
		binary.BigEndian.PutUint16(resp[pcpHeaderLen+18:], ext)
		extIP := g.opts.ExternalIP.As16() // v4-mapped
		copy(resp[pcpHeaderLen+20:], extIP[:])
		return resp
	}
	g.count(func(c *Counters) { c.PCPRecv++; c.Ignored++ })
	return nil
}

// pcpHeader builds a success response header for op.
func (g *Gateway) pcpHeader(op byte, lifetime uint32) []byte {
	h := make([]byte, pcpHeaderLen)
	h[0] = pcpVersion
	h[1] = pcpOpReply | op
	binary.BigEndian.PutUint32(h[4:], lifetime)
	binary.BigEndian.PutUint32(h[8:], g.epoch())
	return h
}

// serveSSDP answers M-SEARCH requests for the root device, an IGD, or all
// devices with a pointer to the device description.
func (g *Gateway) serveSSDP() {
	buf := make([]byte, 1500)
	for {
		n, src, err := g.ssdp.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		pkt := buf[:n]
		search := bytes.HasPrefix(pkt, []byte("M-SEARCH * HTTP/1.1\r\n"))
		st := ssdpHeader(pkt, "ST")
		want := search && (st == "ssdp:all" || st == "upnp:rootdevice" || strings.Contains(st, ":InternetGatewayDevice:"))
		ok := g.opts.UPnP && want
		g.count(func(c *Counters) {
			c.SSDPRecv++
			c.SSDPSearch += b2i(search)
			c.Ignored += b2i(!ok)
		})
		if !ok {
			continue
		}
		g.opts.Logf("igdtest: SSDP search %q from %v", st, src)
		resp := fmt.Appendf(nil, "HTTP/1.1 200 OK\r\n"+
			"CACHE-CONTROL: max-age=120\r\n"+
			"ST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n"+
			"USN: uuid:%s::urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n"+
			"EXT:\r\n"+
			"SERVER: Linux UPnP/1.1 glow-igdtest/1.0\r\n"+
			"LOCATION: http://%s/rootDesc.xml\r\n\r\n",
			deviceUUID, g.httpLn.Addr())
		g.ssdp.WriteToUDPAddrPort(resp, src)
	}
}

// ssdpHeader returns the value of header name in an SSDP datagram.
func ssdpHeader(pkt []byte, name string) string {
	for line := range strings.SplitSeq(string(pkt), "\r\n") {
		k, v, ok := strings.Cut(line, ":")
		if ok && strings.EqualFold(strings.TrimSpace(k), name) {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

const (
	deviceUUID  = "6c6f7767-6967-6474-6573-740000000001"
	serviceType = "urn:schemas-upnp-org:service:WANIPConnection:1"
	controlPath = "/ctl/IPConn"
)

// rootDesc is an InternetGatewayDevice:1 with one WANIPConnection:1
// service, nested as routers (and goupnp) expect.
var rootDesc = `<?xml version="1.0"?>
<root xmlns="urn:schemas-upnp-org:device-1-0">
  <specVersion><major>1</major><minor>1</minor></specVersion>
  <device>
    <deviceType>urn:schemas-upnp-org:device:InternetGatewayDevice:1</deviceType>
    <friendlyName>glow igdtest</friendlyName>
    <manufacturer>glow</manufacturer>
    <modelName>igdtest</modelName>
    <UDN>uuid:` + deviceUUID + `</UDN>
    <deviceList>
      <device>
        <deviceType>urn:schemas-upnp-org:device:WANDevice:1</deviceType>
        <friendlyName>WANDevice</friendlyName>
        <UDN>uuid:` + deviceUUID + `</UDN>
        <deviceList>
          <device>
            <deviceType>urn:schemas-upnp-org:device:WANConnectionDevice:1</deviceType>
            <friendlyName>WANConnectionDevice</friendlyName>
            <UDN>uuid:` + deviceUUID + `</UDN>
            <serviceList>
              <service>
                <serviceType>` + serviceType + `</serviceType>
                <serviceId>urn:upnp-org:serviceId:WANIPConn1</serviceId>
                <SCPDURL>/WANIPCn.xml</SCPDURL>
                <controlURL>` + controlPath + `</controlURL>
                <eventSubURL>/evt/IPConn</eventSubURL>
              </service>
            </serviceList>
          </device>
        </deviceList>
      </device>
    </deviceList>
  </device>
</root>
`

func (g *Gateway) serveDescription(w http.ResponseWriter, r *http.Request) {
	ok := g.opts.UPnP
	g.count(func(c *Counters) { c.UPnPDescription++; c.Ignored += b2i(!ok) })
	if !ok {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", `text/xml; charset="utf-8"`)
	io.WriteString(w, rootDesc)
}

// serveControl handles the SOAP actions of WANIPConnection:1 that port
// mapping clients use.
func (g *Gateway) serveControl(w http.ResponseWriter, r *http.Request) {
	_, action, _ := strings.Cut(strings.Trim(r.Header.Get("SOAPAction"), `"`), "#")
	args, err := soapArgs(io.LimitReader(r.Body, 64<<10))
	ok := g.opts.UPnP && err == nil
	g.count(func(c *Counters) {
		switch action {
		case "AddPortMapping":
			c.UPnPAdd++
		case "DeletePortMapping":
			c.UPnPDelete++
		case "GetExternalIPAddress":
			c.UPnPExternalIP++
		default:
			c.UPnPOther++
		}
		c.Ignored += b2i(!ok)
	})
	if !ok {
		http.Error(w, "not serving UPnP", http.StatusNotFound)
		return
	}
	g.opts.Logf("igdtest: UPnP %s %v from %v", action, args, r.RemoteAddr)
	var out []string // name, value pairs
	switch action {
	case "GetExternalIPAddress":
		out = []string{"NewExternalIPAddress", g.opts.ExternalIP.String()}
	case "GetStatusInfo":
		out = []string{"NewConnectionStatus", "Connected", "NewLastConnectionError", "ERROR_NONE",
			"NewUptime", strconv.Itoa(int(time.Since(g.start).Seconds()))}
	case "AddPortMapping":
		ext, err1 := strconv.ParseUint(args["NewExternalPort"], 10, 16)
		in, err2 := strconv.ParseUint(args["NewInternalPort"], 10, 16)
		client, err3 := netip.ParseAddr(args["NewInternalClient"])
		lease, err4 := strconv.ParseUint(args["NewLeaseDuration"], 10, 32)
		if err := errors.Join(err1, err2, err3, err4); err != nil || ext == 0 || in == 0 {
			soapFault(w, 402, "Invalid Args")
			return
		}
		internal := netip.AddrPortFrom(client, uint16(in))
		g.mu.Lock()
		conflict := slices.ContainsFunc(g.mappings, func(m Mapping) bool {
			return m.External.Port() == uint16(ext) && m.Internal != internal
		})
		g.mu.Unlock()
		if conflict {
			soapFault(w, 718, "ConflictInMappingEntry")
			return
		}
		g.deleteMapping("upnp", func(m Mapping) bool { return m.Internal == internal })
		g.addMapping("upnp", internal, uint16(ext), time.Duration(lease)*time.Second)
	case "DeletePortMapping":
		ext, err := strconv.ParseUint(args["NewExternalPort"], 10, 16)
		if err != nil {
			soapFault(w, 402, "Invalid Args")
			return
		}
		if !g.deleteMapping("upnp", func(m Mapping) bool { return m.External.Port() == uint16(ext) }) {
			soapFault(w, 714, "NoSuchEntryInArray")
			return
		}
	default:
		soapFault(w, 401, "Invalid Action")
		return
	}
	var body strings.Builder
	for i := 0; i+1 < len(out); i += 2 {
		fmt.Fprintf(&body, "<%s>%s</%s>", out[i], xmlEscape(out[i+1]), out[i])
	}
	w.Header().Set("Content-Type", `text/xml; charset="utf-8"`)
	fmt.Fprintf(w, `<?xml version="1.0"?>`+"\n"+
		`<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" s:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/">`+
		`<s:Body><u:%sResponse xmlns:u="%s">%s</u:%sResponse></s:Body></s:Envelope>`,
		action, serviceType, body.String(), action)
}

// soapArgs returns the leaf elements of a SOAP request body by local name.
func soapArgs(r io.Reader) (map[string]string, error) {
	args := map[string]string{}
	d := xml.NewDecoder(r)
	var name string
	var text strings.Builder
	for {
		tok, err := d.Token()
		if err == io.EOF {
			return args, nil
		}
		if err != nil {
			return nil, err
		}
		switch t := tok.(type) {
		case xml.StartElement:
			name = t.Name.Local
			text.Reset()
		case xml.CharData:
			text.Write(t)
		case xml.EndElement:
			if name == t.Name.Local {
				args[name] = strings.TrimSpace(text.String())
			}
			name = ""
		}
	}
}

// soapFault writes a UPnP error (UPnP Device Architecture 1.1, 3.2.2).
func soapFault(w http.ResponseWriter, code int, desc string) {
	w.Header().Set("Content-Type", `text/xml; charset="utf-8"`)
	w.WriteHeader(http.StatusInternalServerError)
	fmt.Fprintf(w, `<?xml version="1.0"?>`+"\n"+
		`<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" s:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/">`+
		`<s:Body><s:Fault><faultcode>s:Client</faultcode><faultstring>UPnPError</faultstring><detail>`+
		`<UPnPError xmlns="urn:schemas-upnp-org:control-1-0"><errorCode>%d</errorCode><errorDescription>%s</errorDescription></UPnPError>`+
		`</detail></s:Fault></s:Body></s:Envelope>`, code, desc)
}

func xmlEscape(s string) string {
	var b strings.Builder
	xml.EscapeText(&b, []byte(s))
	return b.String()
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}
