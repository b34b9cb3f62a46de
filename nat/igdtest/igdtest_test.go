package igdtest_test

import (
	"bytes"
	"encoding/binary"
	"go/parser"
	"go/token"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"glow/nat/igdtest"
)

// exchange sends req to addr on loopback and returns the answer, or nil
// after a short wait.
func exchange(t *testing.T, addr netip.AddrPort, req []byte) []byte {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.WriteToUDPAddrPort(req, addr); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	buf := make([]byte, 1500)
	n, err := c.Read(buf)
	if err != nil {
		return nil
	}
	return buf[:n]
}

func TestPMPAndPCP(t *testing.T) {
	g, err := igdtest.New(igdtest.Options{AnyPorts: true, PMP: true})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	pxp := g.PXPAddr()

	resp := exchange(t, pxp, []byte{0, 0})
	if len(resp) != 12 || resp[1] != 0x80 || netip.AddrFrom4([4]byte(resp[8:12])) != g.ExternalIP() {
		t.Fatalf("public address answer % x", resp)
	}
	req := make([]byte, 12)
	req[1] = 1 // map UDP
	binary.BigEndian.PutUint16(req[4:], 5000)
	binary.BigEndian.PutUint32(req[8:], 60)
	resp = exchange(t, pxp, req)
	if len(resp) != 16 || resp[1] != 0x81 || binary.BigEndian.Uint16(resp[10:]) != 5000 || binary.BigEndian.Uint32(resp[12:]) != 60 {
		t.Fatalf("map answer % x", resp)
	}
	if ms := g.Mappings(); len(ms) != 1 || ms[0].Proto != "pmp" || ms[0].Internal.Port() != 5000 {
		t.Fatalf("mappings %+v", ms)
	}
	binary.BigEndian.PutUint32(req[8:], 0)
	if resp = exchange(t, pxp, req); len(resp) != 16 || len(g.Mappings()) != 0 {
		t.Fatalf("delete answer % x, mappings %+v", resp, g.Mappings())
	}

	// PCP is off: silent, but counted.
	announce := make([]byte, 24)
	announce[0] = 2
	if resp = exchange(t, pxp, announce); resp != nil {
		t.Errorf("PCP answered while off: % x", resp)
	}
	want := igdtest.Counters{PMPRecv: 3, PMPPublicAddr: 1, PMPMap: 1, PMPDelete: 1, PCPRecv: 1, PCPAnnounce: 1, Ignored: 1}
	if c := g.Counters(); c != want {
		t.Errorf("counters %+v, want %+v", c, want)
	}
}

func TestPCPMap(t *testing.T) {
	g, err := igdtest.New(igdtest.Options{AnyPorts: true, PCP: true})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	req := make([]byte, 60)
	req[0], req[1] = 2, 1
	binary.BigEndian.PutUint32(req[4:], 120)
	client := netip.MustParseAddr("::ffff:10.0.0.2").As16()
	copy(req[8:], client[:])
	copy(req[24:36], "nonce-nonce!")
	req[36] = 17
	binary.BigEndian.PutUint16(req[40:], 41641)
	resp := exchange(t, g.PXPAddr(), req)
	if len(resp) != 60 || resp[1] != 0x81 || resp[3] != 0 || !bytes.Equal(resp[24:36], req[24:36]) ||
		binary.BigEndian.Uint16(resp[42:]) != 41641 || netip.AddrFrom16([16]byte(resp[44:60])).Unmap() != g.ExternalIP() {
		t.Fatalf("PCP map answer % x", resp)
	}
	if ms := g.Mappings(); len(ms) != 1 || ms[0].Internal != netip.MustParseAddrPort("10.0.0.2:41641") {
		t.Fatalf("mappings %+v", ms)
	}
}

func TestUPnP(t *testing.T) {
	g, err := igdtest.New(igdtest.Options{AnyPorts: true, UPnP: true})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	resp := exchange(t, g.SSDPAddr(), []byte("M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nST: ssdp:all\r\nMAN: \"ssdp:discover\"\r\nMX: 2\r\n\r\n"))
	_, loc, ok := strings.Cut(string(resp), "LOCATION: ")
	if !ok {
		t.Fatalf("SSDP answer %q", resp)
	}
	loc, _, _ = strings.Cut(loc, "\r\n")
	res, err := http.Get(loc)
	if err != nil {
		t.Fatal(err)
	}
	desc, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if !bytes.Contains(desc, []byte("WANIPConnection:1")) {
		t.Fatalf("description %s", desc)
	}
	soap := func(action, args string) (int, string) {
		body := `<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><u:` + action +
			` xmlns:u="urn:schemas-upnp-org:service:WANIPConnection:1">` + args + `</u:` + action + `></s:Body></s:Envelope>`
		req, _ := http.NewRequest("POST", strings.Replace(loc, "/rootDesc.xml", "/ctl/IPConn", 1), strings.NewReader(body))
		req.Header.Set("SOAPAction", `"urn:schemas-upnp-org:service:WANIPConnection:1#`+action+`"`)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	add := `<NewRemoteHost></NewRemoteHost><NewExternalPort>7000</NewExternalPort><NewProtocol>UDP</NewProtocol>` +
		`<NewInternalPort>41641</NewInternalPort><NewInternalClient>10.0.0.2</NewInternalClient><NewEnabled>1</NewEnabled>` +
		`<NewPortMappingDescription>x</NewPortMappingDescription><NewLeaseDuration>60</NewLeaseDuration>`
	if code, b := soap("AddPortMapping", add); code != 200 || len(g.Mappings()) != 1 {
		t.Fatalf("AddPortMapping: %d %s", code, b)
	}
	if code, b := soap("GetExternalIPAddress", ""); code != 200 || !strings.Contains(b, g.ExternalIP().String()) {
		t.Fatalf("GetExternalIPAddress: %d %s", code, b)
	}
	del := `<NewRemoteHost></NewRemoteHost><NewExternalPort>7000</NewExternalPort><NewProtocol>UDP</NewProtocol>`
	if code, b := soap("DeletePortMapping", del); code != 200 || len(g.Mappings()) != 0 {
		t.Fatalf("DeletePortMapping: %d %s", code, b)
	}
	if code, b := soap("DeletePortMapping", del); code != 500 || !strings.Contains(b, "714") {
		t.Fatalf("second DeletePortMapping: %d %s", code, b)
	}
	c := g.Counters()
	if c.SSDPSearch != 1 || c.UPnPDescription != 1 || c.UPnPAdd != 1 || c.UPnPDelete != 2 || c.UPnPExternalIP != 1 {
		t.Errorf("counters %+v", c)
	}
}

// TestPackageDoc checks the package doc's what, how and why (STYLE.md
// habit 16).
func TestPackageDoc(t *testing.T) {
	pkgs, err := parser.ParseDir(token.NewFileSet(), ".", nil, parser.ParseComments|parser.PackageClauseOnly)
	if err != nil {
		t.Fatal(err)
	}
	var docs []string
	for _, f := range pkgs["igdtest"].Files {
		if f.Doc != nil {
			docs = append(docs, f.Doc.Text())
		}
	}
	if len(docs) != 1 || !strings.HasPrefix(docs[0], "Package igdtest ") {
		t.Fatalf("want one package doc starting %q, got %d", "Package igdtest ", len(docs))
	}
	for _, h := range []string{"# How", "# Why this shape"} {
		if !strings.Contains(docs[0], h) {
			t.Errorf("package doc lacks %q", h)
		}
	}
}
