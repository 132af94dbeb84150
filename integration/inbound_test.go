package integration

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// sendHead opens a connection to the gateway and sends the head of a POST to
// path with the given extra header lines, and no body.
func sendHead(t *testing.T, g *gateway, path string, lines ...string) net.Conn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", g.site, 5*time.Second)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	head := fmt.Sprintf("POST %s HTTP/1.1\r\nHost: %s\r\n%s\r\n\r\n", path, g.site, strings.Join(lines, "\r\n"))
	if _, err := io.WriteString(conn, head); err != nil {
		t.Fatalf("sending the head: %v", err)
	}
	return conn
}

// TestOversizedLengthAnsweredAtOnce: a request announcing a body over
// max_body gets 413 before it sends any of it, and the connection is closed
// rather than drained; with Expect: 100-continue there is no 100 Continue
// first. The sender never sends the body, and read_timeout is 30s: reading
// the body would answer only after it, so an answer within the deadline
// below can only come from the Content-Length check.
func TestOversizedLengthAnsweredAtOnce(t *testing.T) {
	t.Parallel()
	g, _ := newSecretGateway(t, "HG_SECRET")
	up := newUpstream(t)
	g.start(g.globals("") + forwardSite(g, "{env.HG_SECRET}", up.url("/in"), "max_body 4KiB\n\t\t\tread_timeout 30s", ""))
	for _, tc := range []struct {
		name  string
		lines []string
	}{
		{"plain", nil},
		{"expect 100-continue", []string{"Expect: 100-continue"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn := sendHead(t, g, hookPath, append([]string{"Content-Type: application/json", "Content-Length: 5000"}, tc.lines...)...)
			conn.SetReadDeadline(time.Now().Add(15 * time.Second))
			br := bufio.NewReader(conn)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("no answer while the body was held back: %v", err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusRequestEntityTooLarge {
				t.Fatalf("first answer %d, want 413 (and never a 100 Continue)", resp.StatusCode)
			}
			if _, err := br.ReadByte(); err != io.EOF {
				t.Fatalf("after the 413 the connection was not closed: read %v (headers %v)", err, resp.Header)
			}
		})
	}
	if n := up.count(); n != 0 {
		t.Fatalf("the upstream received %d requests", n)
	}
}
