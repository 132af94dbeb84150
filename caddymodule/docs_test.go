package caddymodule

import (
	"os"
	"strings"
	"testing"

	"github.com/hookgate/hookgate/verifier"
)

// TestLogFiltersNameEverySignatureHeader: the access-log filters that the
// README recommends and the example configuration uses delete every
// profile's signature header, so that no signature reaches a log.
func TestLogFiltersNameEverySignatureHeader(t *testing.T) {
	for _, file := range []string{"../README.md", "../Caddyfile.example"} {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range verifier.ProfileNames() {
			p, _ := verifier.LookupProfile(name)
			if filter := "request>headers>" + p.SignatureHeader + " delete"; !strings.Contains(string(b), filter) {
				t.Errorf("%s has no %q (profile %s)", file, filter, name)
			}
		}
	}
}
