package testnet

import (
	"net"
	"testing"
)

// Silent starts a loopback TCP listener that accepts connections and never
// answers them: it closes each at once or, with hold, keeps each open until
// the listener is closed, when the test ends.
func Silent(t testing.TB, hold bool) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		var held []net.Conn
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			if hold {
				held = append(held, c)
			} else {
				c.Close()
			}
		}
	}()
	return l
}
