package caddymodule

import (
	"net/http"
	"net/http/httptest"
	"testing"

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
