package caddymodule

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/zap"
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
