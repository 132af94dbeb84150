package outbound

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"syscall"
)

// blockedRanges are the destinations an outbound delivery may not reach
// unless the configuration allows them: loopback, private, shared (CGNAT),
// link-local, multicast, unspecified, documentation, benchmarking and other
// special-purpose ranges of the IANA registries, and the IPv6 forms that
// carry an IPv4 address to a translator (NAT64, 6to4, Teredo), which could
// reach any of the above.
var blockedRanges = func() []netip.Prefix {
	var out []netip.Prefix
	for _, s := range []string{
		// IPv4
		"0.0.0.0/8",       // "this network"; 0.0.0.0 reaches the local host on Linux
		"10.0.0.0/8",      // private
		"100.64.0.0/10",   // shared address space (CGNAT)
		"127.0.0.0/8",     // loopback
		"169.254.0.0/16",  // link-local, cloud metadata
		"172.16.0.0/12",   // private
		"192.0.0.0/24",    // IETF protocol assignments
		"192.0.2.0/24",    // documentation
		"192.88.99.0/24",  // 6to4 relay anycast
		"192.168.0.0/16",  // private
		"198.18.0.0/15",   // benchmarking
		"198.51.100.0/24", // documentation
		"203.0.113.0/24",  // documentation
		"224.0.0.0/4",     // multicast
		"240.0.0.0/4",     // reserved, and the broadcast address
		// IPv6
		"::/96",          // unspecified, loopback and the deprecated IPv4-compatible form
		"64:ff9b::/96",   // NAT64
		"64:ff9b:1::/48", // local-use NAT64
		"100::/64",       // discard-only
		"2001::/23",      // IETF protocol assignments (Teredo, ORCHID, ...)
		"2001:db8::/32",  // documentation
		"2002::/16",      // 6to4
		"3fff::/20",      // documentation
		"5f00::/16",      // SRv6 SIDs
		"fc00::/7",       // unique local
		"fe80::/10",      // link-local
		"fec0::/10",      // site-local (deprecated)
		"ff00::/8",       // multicast
	} {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}()

// Guard decides which IP addresses a Client may dial: none in the
// special-purpose ranges (blockedRanges) but those Allow covers.
type Guard struct {
	Allow []netip.Prefix // explicitly allowed, even inside a blocked range
}

// Check returns an error for an address in a blocked range that the allow
// list does not cover. An IPv4-mapped IPv6 address is judged as the IPv4
// address it carries.
func (g Guard) Check(ip netip.Addr) error {
	ip = ip.Unmap().WithZone("")
	if !ip.IsValid() {
		return fmt.Errorf("refusing to dial an invalid address")
	}
	for _, p := range g.Allow {
		if p.Contains(ip) {
			return nil
		}
	}
	for _, p := range blockedRanges {
		if p.Contains(ip) {
			return fmt.Errorf("refusing to dial %s: in the special-purpose range %s (allow it explicitly with allow_private)", ip, p)
		}
	}
	return nil
}

// control is a net.Dialer Control function: it runs for every address a
// connection attempt actually dials, after DNS resolution, so a name that
// resolves (or later re-resolves) to an internal address is refused too.
func (g Guard) control(network, address string, _ syscall.RawConn) error {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return err
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return fmt.Errorf("refusing to dial %q: not an IP address", host)
	}
	return g.Check(ip)
}

// ParsePrefix accepts a CIDR or a single address.
func ParsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		return p.Masked(), err
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
}

// ParsePrefixes parses a list for ParsePrefix.
func ParsePrefixes(list []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(list))
	for _, s := range list {
		p, err := ParsePrefix(s)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}
