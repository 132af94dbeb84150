package integration

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// separator divides a .caddytest file's Caddyfile from its expectation.
const separator = "----------"

// TestCaddyfileAdapt runs `caddy adapt` on every testdata/caddyfile_adapt
// file: a Caddyfile, a separator line, then the expected JSON, or for a
// config that must be refused, a substring of the expected error. With
// -update the expected JSON is rewritten from the output.
func TestCaddyfileAdapt(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob(filepath.Join("testdata", "caddyfile_adapt", "*.caddytest"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no adapt test files: %v", err)
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".caddytest"), func(t *testing.T) {
			raw, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			caddyfile, expected, ok := strings.Cut(string(raw), "\n"+separator+"\n")
			if !ok {
				t.Fatalf("%s: no %q line", file, separator)
			}
			expected = strings.TrimSpace(expected)
			wantError := !strings.HasPrefix(expected, "{")

			input := filepath.Join(t.TempDir(), "Caddyfile")
			if err := os.WriteFile(input, []byte(caddyfile+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(caddyBin, "adapt", "--config", input, "--adapter", "caddyfile")
			cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			runErr := cmd.Run()

			if wantError {
				if runErr == nil {
					t.Fatalf("adapt succeeded, want an error containing %q; output:\n%s", expected, stdout.String())
				}
				if msg := logMessages(stderr.String()); !strings.Contains(msg, expected) {
					t.Fatalf("adapt error does not contain %q:\n%s", expected, msg)
				}
				return
			}
			if runErr != nil {
				t.Fatalf("adapt: %v\n%s", runErr, stderr.String())
			}
			var pretty bytes.Buffer
			if err := json.Indent(&pretty, bytes.TrimSpace(stdout.Bytes()), "", "\t"); err != nil {
				t.Fatalf("adapt output is not JSON: %v\n%s", err, stdout.String())
			}
			if *update {
				out := caddyfile + "\n" + separator + "\n" + pretty.String() + "\n"
				if err := os.WriteFile(file, []byte(out), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			var got, want any
			if err := json.Unmarshal(pretty.Bytes(), &got); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal([]byte(expected), &want); err != nil {
				t.Fatalf("%s: the expected JSON does not parse: %v", file, err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("adapted JSON differs from %s (run with -update to rewrite it after checking); got:\n%s", file, pretty.String())
			}
		})
	}
}

// logMessages turns Caddy's JSON log lines into their plain messages (and
// errors), so that quoted words compare unescaped.
func logMessages(stderr string) string {
	var out strings.Builder
	for _, line := range strings.Split(stderr, "\n") {
		msg, errMsg := jsonField(line, "msg"), jsonField(line, "error")
		if msg == "" && errMsg == "" {
			out.WriteString(line + "\n")
			continue
		}
		out.WriteString(msg + " " + errMsg + "\n")
	}
	return out.String()
}
