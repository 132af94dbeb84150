package caddymodule

import (
	"errors"
	"fmt"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
)

// resolveSecrets expands {env.*} and {file.*} placeholders in the configured
// secrets. An unset variable or unreadable file is an error, never an empty
// secret. Resolved values live only in memory: the configuration keeps the
// placeholders.
func resolveSecrets(raw []string, log *zap.Logger) ([][]byte, error) {
	repl := caddy.NewReplacer()
	out := make([][]byte, 0, len(raw))
	for i, s := range raw {
		if !strings.Contains(s, "{") {
			log.Warn("a secret is written literally in the configuration, where the admin API shows it; use {env.NAME} or {file./path}",
				zap.Int("secret_index", i))
		}
		v, err := repl.ReplaceOrErr(s, true, true)
		if err != nil {
			// The error names the placeholder, not a value.
			return nil, fmt.Errorf("secret %d: %w", i, err)
		}
		if v == "" {
			return nil, errors.New("secret " + fmt.Sprint(i) + " is empty")
		}
		out = append(out, []byte(v))
	}
	return out, nil
}
