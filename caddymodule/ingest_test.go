package caddymodule

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// TestStatusRecorderSkipsInformational: verify-only mode remembers an event
// by the next handler's final status, so a 103 Early Hints passed on before
// the 200 must not count as the answer.
func TestStatusRecorderSkipsInformational(t *testing.T) {
	for _, tt := range []struct {
		name  string
		write func(w http.ResponseWriter)
		want  int
	}{
		{"103 then 200", func(w http.ResponseWriter) { w.WriteHeader(http.StatusEarlyHints); w.WriteHeader(http.StatusOK) }, 200},
		{"103 then body", func(w http.ResponseWriter) { w.WriteHeader(http.StatusEarlyHints); w.Write([]byte("x")) }, 200},
		{"502", func(w http.ResponseWriter) { w.WriteHeader(http.StatusBadGateway); w.WriteHeader(http.StatusOK) }, 502},
		{"body only", func(w http.ResponseWriter) { w.Write([]byte("x")) }, 200},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rec := &statusRecorder{ResponseWriterWrapper: &caddyhttp.ResponseWriterWrapper{ResponseWriter: httptest.NewRecorder()}}
			tt.write(rec)
			if rec.status != tt.want {
				t.Fatalf("recorded %d, want %d", rec.status, tt.want)
			}
		})
	}
}

// TestReadAll: the body comes back whole whatever the length hint says.
func TestReadAll(t *testing.T) {
	big := strings.Repeat("x", 70_000)
	for _, tt := range []struct {
		name string
		body string
		hint int64
	}{
		{"empty, unknown length", "", -1},
		{"empty, length 0", "", 0},
		{"small, unknown length", `{"a":1}`, -1},
		{"exact", big, int64(len(big))},
		{"hint too small", big, 10},
		{"hint too large", `{"a":1}`, 1 << 20},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := readAll(iotest.OneByteReader(strings.NewReader(tt.body)), tt.hint)
			if err != nil || string(got) != tt.body {
				t.Fatalf("got %d bytes, %v; want %d bytes", len(got), err, len(tt.body))
			}
		})
	}
	if _, err := readAll(iotest.ErrReader(io.ErrUnexpectedEOF), 5); err != io.ErrUnexpectedEOF {
		t.Fatalf("a read error: %v", err)
	}
}

// firstRead records the size of the buffer of the first Read, then ends.
type firstRead struct{ size int }

func (f *firstRead) Read(p []byte) (int, error) {
	f.size = len(p)
	return 0, io.EOF
}

// TestReadAllTrustsLengthOnlyAsBytesArrive: a sender that announces a large
// body and sends nothing must not make the gateway allocate it up front.
func TestReadAllTrustsLengthOnlyAsBytesArrive(t *testing.T) {
	var f firstRead
	if _, err := readAll(&f, 1<<20); err != nil {
		t.Fatal(err)
	}
	if f.size > 32<<10 {
		t.Fatalf("the first read offered %d bytes for an announced 1 MiB", f.size)
	}
}
