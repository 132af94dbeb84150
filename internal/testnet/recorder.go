package testnet

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

// Request is a request a Recorder's server received.
type Request struct {
	Header http.Header
	Body   []byte
}

// Recorder starts a loopback HTTP server that sends each request it
// receives to the channel it returns, which has room for n (a handler waits
// for room beyond that), and answers it with status and body. The server is
// closed when the test ends.
func Recorder(t testing.TB, n, status int, body string) (*httptest.Server, <-chan Request) {
	t.Helper()
	received := make(chan Request, n)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		received <- Request{r.Header.Clone(), b}
		w.WriteHeader(status)
		io.WriteString(w, body)
	}))
	t.Cleanup(srv.Close)
	return srv, received
}
