package verifier

import (
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// readVector reads a test vector, preferring the copy in testdata/ and
// falling back to the shared spec directory beside the repository.
func readVector(t testing.TB, name string) []byte {
	t.Helper()
	for _, dir := range []string{"testdata/vectors", "../../shared/spec/vectors"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err == nil {
			return b
		}
		if !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
	}
	t.Fatalf("test vector %s not found", name)
	return nil
}

type vectors struct {
	secret, body []byte
	sig          string
	ts           time.Time
}

func loadVectors(t testing.TB) vectors {
	v := vectors{
		secret: readVector(t, "secret.txt"),
		body:   readVector(t, "document.processed.json"),
		// The .sig file ends with a newline (as written by a shell); the
		// header value is the line without it. secret.txt and the body
		// have no trailing newline and are used byte for byte.
		sig: strings.TrimSuffix(string(readVector(t, "document.processed.sig")), "\n"),
	}
	v.ts = time.Date(2026, 3, 31, 12, 0, 0, 0, time.UTC)
	return v
}

func headers(sig, event string) http.Header {
	h := http.Header{}
	if sig != "" {
		h.Set(SignatureHeader, sig)
	}
	if event != "" {
		h.Set(EventHeader, event)
	}
	return h
}

func fixedClock(t time.Time) func() time.Time { return func() time.Time { return t } }

func mustNew(t testing.TB, cfg Config) *Verifier {
	t.Helper()
	v, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// wantKind asserts that err is an *Error of kind k with HTTP status status.
func wantKind(t testing.TB, err error, k Kind, status int) {
	t.Helper()
	if k == KindUnknown {
		if err != nil {
			t.Fatalf("unexpected error: %v (kind %v)", err, KindOf(err))
		}
		return
	}
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("want *Error of kind %v, got %T %v", k, err, err)
	}
	if e.Kind != k || KindOf(err) != k {
		t.Fatalf("want kind %v, got %v (%v)", k, e.Kind, err)
	}
	if e.Status() != status {
		t.Fatalf("kind %v: want status %d, got %d", k, status, e.Status())
	}
}
