package outbound

import (
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/hookgate/hookgate/internal/testnet"
)

// These tests judge addresses without opening a connection, except the last,
// which dials a listener on loopback.

func TestAddressGuardBlocksSpecialPurposeRanges(t *testing.T) {
	blocked := []string{
		"0.0.0.0", "0.1.2.3", "10.0.0.1", "10.255.255.255", "100.64.0.1", "100.127.255.254", "127.0.0.1", "127.1.2.3",
		"169.254.169.254", "172.16.0.1", "172.31.255.255", "192.0.0.8", "192.0.2.1", "192.88.99.1", "192.168.1.1",
		"198.18.0.1", "198.19.255.255", "198.51.100.7", "203.0.113.9", "224.0.0.1", "239.255.255.250",
		"240.0.0.1", "255.255.255.255",
		"::", "::1", "::127.0.0.1", "::ffff:127.0.0.1", "::ffff:10.1.2.3", "::ffff:169.254.169.254", "::ffff:0.0.0.0",
		"64:ff9b::7f00:1", "64:ff9b::808:808", "64:ff9b:1::1", "100::1", "2001::1", "2001:db8::1",
		"2002:7f00:1::1", "2002:808:808::1", "3fff::1", "5f00::1", "fc00::1", "fd12:3456::1", "fe80::1", "fe80::1%eth0",
		"fec0::1", "ff02::1",
	}
	for _, s := range blocked {
		if err := (Guard{}).Check(netip.MustParseAddr(s)); err == nil {
			t.Errorf("%s was allowed", s)
		} else if !strings.Contains(err.Error(), "allow_private") {
			t.Errorf("%s: error %q does not say how to allow it", s, err)
		}
	}
	allowed := []string{
		"1.1.1.1", "8.8.8.8", "9.255.255.255", "11.0.0.1", "100.63.255.255", "100.128.0.1", "126.255.255.255",
		"128.0.0.1", "169.253.255.255", "172.15.255.255", "172.32.0.1", "192.0.1.1", "192.167.255.255", "192.169.0.1",
		"198.17.255.255", "198.20.0.1", "223.255.255.255",
		"::ffff:8.8.8.8", "2606:4700::1111", "2a00:1450:4001::200e", "2001:4860:4860::8888",
	}
	for _, s := range allowed {
		if err := (Guard{}).Check(netip.MustParseAddr(s)); err != nil {
			t.Errorf("%s was refused: %v", s, err)
		}
	}
}

func TestAddressGuardAllowList(t *testing.T) {
	g := Guard{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("fd00:1::/64")}}
	for _, s := range []string{"127.0.0.1", "::ffff:127.0.0.1", "fd00:1::5"} {
		if err := g.Check(netip.MustParseAddr(s)); err != nil {
			t.Errorf("%s refused despite the allow list: %v", s, err)
		}
	}
	for _, s := range []string{"::1", "10.0.0.1", "fd00:2::5", "169.254.169.254"} {
		if err := g.Check(netip.MustParseAddr(s)); err == nil {
			t.Errorf("%s allowed, but the allow list does not cover it", s)
		}
	}
}

func TestAddressGuardControl(t *testing.T) {
	tests := []struct {
		address string
		ok      bool
	}{
		{"8.8.8.8:443", true},
		{"[2606:4700::1111]:443", true},
		{"127.0.0.1:80", false},
		{"[::ffff:127.0.0.1]:80", false},
		{"[64:ff9b::a00:1]:80", false},
		{"localhost:80", false}, // only resolved addresses reach Control
		{"2130706433:80", false},
		{"no-port", false},
	}
	for _, tt := range tests {
		if err := (Guard{}).control("tcp", tt.address, nil); (err == nil) != tt.ok {
			t.Errorf("control(%s) = %v, want ok=%v", tt.address, err, tt.ok)
		}
	}
}

func TestAddressGuardRefusesAtDialTime(t *testing.T) {
	l := testnet.Silent(t, false)
	refusing := &net.Dialer{Timeout: time.Second, Control: Guard{}.control}
	if c, err := refusing.Dial("tcp", l.Addr().String()); err == nil {
		c.Close()
		t.Fatal("dialed loopback without it being allowed")
	} else if !strings.Contains(err.Error(), "refusing to dial 127.0.0.1") {
		t.Fatalf("dial error %q does not say why", err)
	}
	allowing := &net.Dialer{Timeout: time.Second, Control: Guard{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}}.control}
	c, err := allowing.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatalf("dial with loopback allowed: %v", err)
	}
	c.Close()
}

func TestParsePrefix(t *testing.T) {
	for in, want := range map[string]string{"127.0.0.1": "127.0.0.1/32", "10.1.2.3/8": "10.0.0.0/8", "::1": "::1/128", "::ffff:127.0.0.1": "127.0.0.1/32"} {
		if p, err := ParsePrefix(in); err != nil || p.String() != want {
			t.Errorf("ParsePrefix(%s) = %v, %v; want %s", in, p, err, want)
		}
	}
}
