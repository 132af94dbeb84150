package caddymodule

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/hookgate/hookgate/spool"
	"github.com/hookgate/hookgate/verifier"
)

// TestStatusRecorder: verify-only mode remembers an event by the next
// handler's final status, however the handler writes it; a 103 Early Hints
// passed on before the 200 does not count as the answer.
func TestStatusRecorder(t *testing.T) {
	body := func() io.Reader { return iotest.OneByteReader(strings.NewReader("streamed")) } // no WriteTo
	for _, tt := range []struct {
		name  string
		write func(w http.ResponseWriter)
		want  int
	}{
		{"103 then 200", func(w http.ResponseWriter) { w.WriteHeader(http.StatusEarlyHints); w.WriteHeader(http.StatusOK) }, 200},
		{"103 then body", func(w http.ResponseWriter) { w.WriteHeader(http.StatusEarlyHints); w.Write([]byte("x")) }, 200},
		{"502", func(w http.ResponseWriter) { w.WriteHeader(http.StatusBadGateway); w.WriteHeader(http.StatusOK) }, 502},
		{"body only", func(w http.ResponseWriter) { w.Write([]byte("x")) }, 200},
		{"io.Copy only", func(w http.ResponseWriter) { io.Copy(w, body()) }, 200},
		{"201 then io.Copy", func(w http.ResponseWriter) { w.WriteHeader(http.StatusCreated); io.Copy(w, body()) }, 201},
		{"flush only", func(w http.ResponseWriter) { w.(http.Flusher).Flush() }, 200},
		{"ResponseController flush", func(w http.ResponseWriter) { http.NewResponseController(w).Flush() }, 200},
		{"503 then flush", func(w http.ResponseWriter) { w.WriteHeader(503); http.NewResponseController(w).Flush() }, 503},
	} {
		t.Run(tt.name, func(t *testing.T) {
			// As in Caddy, the writer handed on is a wrapper with a ReadFrom.
			rec := &statusRecorder{ResponseWriter: &caddyhttp.ResponseWriterWrapper{ResponseWriter: httptest.NewRecorder()}}
			tt.write(rec)
			if rec.status != tt.want {
				t.Fatalf("recorded %d, want %d", rec.status, tt.want)
			}
		})
	}
}

// TestHandOnRemembersASuccessHoweverWritten: a next handler that streams
// its 200 through io.Copy without WriteHeader, or writes nothing at all (the
// server then answers 200), has the event remembered, so the sender's retry
// is a duplicate and is not handed on again.
func TestHandOnRemembersASuccessHoweverWritten(t *testing.T) {
	sp, err := spool.Open(spool.Options{Dir: t.TempDir(), MinFreeDisk: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	for _, tt := range []struct {
		name  string
		write func(w http.ResponseWriter, r *http.Request) error
	}{
		{"streamed", func(w http.ResponseWriter, r *http.Request) error {
			_, err := io.Copy(w, iotest.OneByteReader(r.Body))
			return err
		}},
		{"nothing written", func(http.ResponseWriter, *http.Request) error { return nil }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := &Ingest{Name: "handed-on", dedupeWindow: time.Hour, log: zap.NewNop()}
			calls := 0
			next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
				calls++
				return tt.write(w, r)
			})
			id := "evt_" + strings.ReplaceAll(tt.name, " ", "_")
			ev := &verifier.Event{ID: id, Body: []byte(`{"eventId":"` + id + `"}`)}
			for i := range 2 {
				under := httptest.NewRecorder()
				w := &caddyhttp.ResponseWriterWrapper{ResponseWriter: under}
				r := httptest.NewRequest(http.MethodPost, "/hook", nil)
				repl := caddy.NewReplacer()
				if err := h.handOn(w, r, next, repl, sp, ev); err != nil || under.Code != http.StatusOK {
					t.Fatalf("delivery %d: %d, %v", i+1, under.Code, err)
				}
				if got, _ := repl.Get("http.webhook.outcome"); i == 0 && got != "handed_on" {
					t.Fatalf("{http.webhook.outcome} = %v, want handed_on", got)
				}
			}
			if calls != 1 {
				t.Fatalf("the next handler was called %d times, want once: its 200 was not seen", calls)
			}
		})
	}
}

// TestReadAll: the body comes back whole whatever the size hint says, and
// the request's hold covers its buffer until released.
func TestReadAll(t *testing.T) {
	big := strings.Repeat("x", 70_000)
	for _, tt := range []struct {
		name string
		body string
		size int64
	}{
		{"empty, unknown length", "", 1<<20 + 1},
		{"empty, length 0", "", 1},
		{"small, unknown length", `{"a":1}`, 1<<20 + 1},
		{"exact", big, int64(len(big)) + 1},
		{"size too small", big, 10},
		{"size too large", `{"a":1}`, 1 << 20},
	} {
		t.Run(tt.name, func(t *testing.T) {
			budget := &byteBudget{limit: 1 << 30}
			held := budget.hold()
			got, err := readAll(iotest.OneByteReader(strings.NewReader(tt.body)), tt.size, &held)
			if err != nil || string(got) != tt.body {
				t.Fatalf("got %d bytes, %v; want %d bytes", len(got), err, len(tt.body))
			}
			if held.n != int64(cap(got)) || budget.used.Load() != held.n {
				t.Fatalf("the hold has %d bytes and the budget %d, for a buffer of %d", held.n, budget.used.Load(), cap(got))
			}
			held.release()
			held.release()
			if n := budget.used.Load(); n != 0 {
				t.Fatalf("released, the budget still has %d bytes", n)
			}
		})
	}
	budget := &byteBudget{limit: 1 << 30}
	held := budget.hold()
	if _, err := readAll(iotest.ErrReader(io.ErrUnexpectedEOF), 5, &held); err != io.ErrUnexpectedEOF {
		t.Fatalf("a read error: %v", err)
	}
}

// stallingBody gives n bytes in reads of at most 1000, then times out.
type stallingBody struct{ n int }

func (s *stallingBody) Read(p []byte) (int, error) {
	if s.n == 0 {
		return 0, os.ErrDeadlineExceeded
	}
	k := min(len(p), s.n, 1000)
	s.n -= k
	return k, nil
}

// TestReadAllGrowsWithArrivals: a sender that announces 1 MiB and sends
// part of it makes the buffer grow with what it sent, by a quarter at most
// past the first 64 KiB, not to the announced size.
func TestReadAllGrowsWithArrivals(t *testing.T) {
	for _, sent := range []int{0, 100, 33 << 10, 100 << 10, 300 << 10} {
		budget := &byteBudget{limit: 1 << 30}
		held := budget.hold()
		b, err := readAll(&stallingBody{n: sent}, 1<<20+1, &held)
		if len(b) != sent || !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("sent %d: got %d bytes, %v", sent, len(b), err)
		}
		if want := max(readAhead, sent*5/4); cap(b) > want || held.n != int64(cap(b)) {
			t.Fatalf("sent %d of an announced 1 MiB: a buffer of %d bytes (hold %d), want at most %d", sent, cap(b), held.n, want)
		}
	}
}

// TestIngestRefusesBodiesOverTheBudget: while the bodies being read hold
// max_unverified_bytes, a request that needs more is answered 503 with a
// Retry-After and its connection closed; once there is room it is read,
// and what it held is given back when it is done.
func TestIngestRefusesBodiesOverTheBudget(t *testing.T) {
	v, err := verifier.New(verifier.Config{Secrets: [][]byte{[]byte("0123456789abcdef0123456789abcdef")}})
	if err != nil {
		t.Fatal(err)
	}
	budget := &byteBudget{limit: 16 << 10}
	h := &Ingest{Name: "busy-test", verifier: v, maxBody: 12 << 10, readTimeout: 5 * time.Second,
		app: &App{unverified: budget}, log: zap.NewNop(), refusals: zap.NewNop()}
	post := func() *httptest.ResponseRecorder {
		body := `{"pad":"` + strings.Repeat("x", 10<<10) + `"}`
		req := httptest.NewRequest(http.MethodPost, "/hook", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		if err := h.ServeHTTP(rec, req, nil); err != nil {
			var he caddyhttp.HandlerError
			if !errors.As(err, &he) {
				t.Fatalf("error %v", err)
			}
			rec.Code = he.StatusCode
		}
		return rec
	}

	other := budget.hold() // another request's body being read
	if !other.reserve(8 << 10) {
		t.Fatal("no room for the other request")
	}
	rec := post()
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" || rec.Header().Get("Connection") != "close" {
		t.Fatalf("over the budget: %d %v, want 503 with Retry-After and Connection: close", rec.Code, rec.Header())
	}
	if n := budget.used.Load(); n != 8<<10 {
		t.Fatalf("after the refusal the budget holds %d bytes, want the other request's %d", n, 8<<10)
	}
	other.release()
	if rec := post(); rec.Code != http.StatusUnauthorized { // read in full, then the missing signature
		t.Fatalf("with room: %d, want the body read and refused for its signature (401)", rec.Code)
	}
	if n := budget.used.Load(); n != 0 {
		t.Fatalf("after the request the budget holds %d bytes", n)
	}
}

// TestReadAllTakesAnAnnouncedBodyAtOnce: a body of up to 64 KiB whose
// length is announced is read into one buffer, not grown and copied.
func TestReadAllTakesAnAnnouncedBodyAtOnce(t *testing.T) {
	body := strings.Repeat("x", 64<<10)
	budget := &byteBudget{limit: 1 << 30}
	allocs := testing.AllocsPerRun(20, func() {
		held := budget.hold()
		defer held.release()
		if b, err := readAll(strings.NewReader(body), int64(len(body))+1, &held); err != nil || len(b) != len(body) {
			t.Fatalf("%d bytes, %v", len(b), err)
		}
	})
	if allocs > 2 {
		t.Fatalf("%.0f allocations to read a 64 KiB body, want one buffer", allocs)
	}
}
