package caddymodule

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

func TestResolveSecrets(t *testing.T) {
	t.Setenv("HG_UNIT_SECRET", "from-the-environment-123")
	t.Setenv("HG_UNIT_EMPTY", "")
	file := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(file, []byte("from-a-file-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := resolveSecrets([]string{"{env.HG_UNIT_SECRET}", "{file." + file + "}"}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	if string(got[0]) != "from-the-environment-123" || string(got[1]) != "from-a-file-0123456789" {
		t.Fatalf("resolved %q", got)
	}
	for _, bad := range []string{"{env.HG_UNIT_EMPTY}", "{env.HG_UNIT_UNSET_XYZ}", "{file./nonexistent/secret}"} {
		_, err := resolveSecrets([]string{bad}, zap.NewNop())
		if err == nil {
			t.Errorf("%s resolved without error", bad)
		} else if strings.Contains(err.Error(), "from-") {
			t.Errorf("error %q shows a secret", err)
		}
	}
}

func TestResolveSecretsWarnsAboutLiterals(t *testing.T) {
	core, logs := observer.New(zap.WarnLevel)
	literal := "a-literal-secret-from-json-config"
	if _, err := resolveSecrets([]string{literal}, zap.New(core)); err != nil {
		t.Fatal(err)
	}
	if logs.FilterMessageSnippet("written literally").Len() != 1 {
		t.Fatalf("no warning about a literal secret: %v", logs.All())
	}
	for _, e := range logs.All() {
		if strings.Contains(e.Message, literal) || strings.Contains(fmt.Sprint(e.ContextMap()), literal) {
			t.Fatal("the warning shows the secret")
		}
	}
}
