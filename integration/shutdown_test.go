package integration

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hookgate/hookgate/internal/testwait"
)

// TestEventsDuringShutdownGraceAreStored: a delivery whose body arrives
// after SIGTERM, while the HTTP servers are in their grace period, is
// answered 202 and stored: it is delivered after the next start.
func TestEventsDuringShutdownGraceAreStored(t *testing.T) {
	t.Parallel()
	g, secret := newSecretGateway(t, "HG_SECRET")
	port := freePort(t) // the upstream is down until the restart
	config := strings.Replace(g.globals(""), "grace_period 2s", "grace_period 1m", 1) +
		forwardSite(g, "{env.HG_SECRET}", fmt.Sprintf("http://127.0.0.1:%d/in", port), "name grace", "backoff 100ms 200ms")
	g.start(config)
	d := newSender(g, hookPath, secret).event(typeOK)

	conn, err := net.DialTimeout("tcp", g.site, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprint(conn, d.head(g.site, "Expect: 100-continue"))
	conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	rd := bufio.NewReader(conn)
	// The gateway asks for the body once the handler reads it.
	if resp, err := http.ReadResponse(rd, nil); err != nil || resp.StatusCode != http.StatusContinue {
		t.Fatalf("waiting for 100 Continue: %v %v", resp, err)
	}

	exited := make(chan error, 1)
	go func() { exited <- g.terminate(90 * time.Second) }()
	testwait.Until(t, 30*time.Second, func() (bool, string) {
		return len(g.logLines("grace period initiated")) > 0, "the HTTP servers did not begin their grace period"
	})
	conn.Write(d.Body)
	resp, err := http.ReadResponse(rd, nil)
	if err != nil {
		t.Fatalf("the answer to a body sent during the grace period: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("a body sent during the grace period: %d, want 202", resp.StatusCode)
	}
	if err := <-exited; err != nil {
		t.Fatal(err)
	}

	up := newUpstreamAt(t, port)
	g.start(config)
	waitDelivered(t, 10*time.Second, []string{d.ID}, up)
}
