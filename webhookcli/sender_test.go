package webhookcli

import (
	"bytes"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/hookgate/hookgate/internal/testnet"
	"github.com/hookgate/hookgate/verifier"
)

const vectors = "../verifier/testdata/vectors/"

// runCommand runs c with args and returns what it printed.
func runCommand(t *testing.T, c *cobra.Command, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	c.SetOut(&out)
	c.SetErr(io.Discard)
	c.SetArgs(args)
	err := c.Execute()
	return out.String(), err
}

func TestSignAndVerifyCommands(t *testing.T) {
	want, err := os.ReadFile(vectors + "document.processed.sig")
	if err != nil {
		t.Fatal(err)
	}
	out, err := runCommand(t, signCommand(), "--secret-file", vectors+"secret.txt", "--body", vectors+"document.processed.json")
	if err != nil || out != string(want) {
		t.Fatalf("sign printed %q (%v), want %q", out, err, want)
	}
	sig := strings.TrimSpace(out)
	if out, err := runCommand(t, verifyCommand(), "--secret-file", vectors+"secret.txt", "--body", vectors+"document.processed.json", "--signature", sig); err != nil || !strings.HasPrefix(out, "ok: document.processed") {
		t.Fatalf("verify: %q, %v", out, err)
	}
	_, err = runCommand(t, verifyCommand(), "--secret", "another-secret-0123456789", "--body", vectors+"document.processed.json", "--signature", sig)
	if err == nil || !strings.Contains(err.Error(), "signature_mismatch") {
		t.Fatalf("verify with another secret: %v", err)
	}
}

func TestSendCommand(t *testing.T) {
	secret := "send-command-secret-0123"
	srv, received := testnet.Recorder(t, 3, http.StatusAccepted, `{"status":"accepted"}`)
	dir := t.TempDir()
	payload := filepath.Join(dir, "payload.json")
	writeFile(t, payload, `{"n":12345678901234567890}`)
	sent := filepath.Join(dir, "sent.json")

	out, err := runCommand(t, sendCommand(), "--url", srv.URL, "--secret", secret, "--event", "document.processed", "--payload", payload, "--out", sent)
	if err != nil || !strings.HasPrefix(out, "202 Accepted evt_") {
		t.Fatalf("send: %q, %v", out, err)
	}
	r := <-received
	v, _ := verifier.New(verifier.Config{Secrets: [][]byte{[]byte(secret)}, Tolerance: time.Minute})
	ev, err := v.Verify(r.Header, r.Body)
	if err != nil {
		t.Fatalf("the sent delivery does not verify: %v", err)
	}
	if string(ev.Payload) != `{"n":12345678901234567890}` || ev.OrganizationID != "org_demo" || !strings.HasPrefix(ev.ID, "evt_") {
		t.Fatalf("sent event %+v", ev)
	}
	if saved, _ := os.ReadFile(sent); !bytes.Equal(saved, r.Body) {
		t.Fatal("--out did not save the bytes sent")
	}
	// --body repeats those bytes exactly; --envelope gets a fresh id.
	if _, err := runCommand(t, sendCommand(), "--url", srv.URL, "--secret", secret, "--body", sent); err != nil {
		t.Fatal(err)
	}
	if again := <-received; !bytes.Equal(again.Body, r.Body) {
		t.Fatal("--body changed the bytes")
	}
	if _, err := runCommand(t, sendCommand(), "--url", srv.URL, "--secret", secret, "--envelope", sent); err != nil {
		t.Fatal(err)
	}
	fresh := <-received
	ev2, err := v.Verify(fresh.Header, fresh.Body)
	if err != nil || ev2.ID == ev.ID || string(ev2.Payload) != string(ev.Payload) {
		t.Fatalf("--envelope: %+v, %v", ev2, err)
	}
}

// TestProfileCommands: send --profile signs each scheme as its gateway
// profile verifies it, sign --profile prints those headers, and verify
// --profile checks them back.
func TestProfileCommands(t *testing.T) {
	srv, received := testnet.Recorder(t, 1, http.StatusAccepted, "")
	dir := t.TempDir()
	tests := []struct {
		profile, secret, body string
		args                  []string
		wantID, wantType      string
	}{
		{verifier.StandardWebhooks, "whsec_Y2xpLXN0YW5kYXJkLXdlYmhvb2tzLWtleS0wMQ==", `{"type":"invoice.paid","data":{}}`,
			[]string{"--id", "msg_cli_1"}, "msg_cli_1", "invoice.paid"},
		{verifier.GitHub, "cli-github-secret-0123", `{"zen":"ok"}`, []string{"--id", "72d3162e-cc78", "--event", "ping"}, "72d3162e-cc78", "ping"},
		{verifier.Stripe, "whsec_cli-stripe-0123456789", `{"id":"evt_cli_1","type":"invoice.paid"}`, nil, "evt_cli_1", "invoice.paid"},
		{verifier.Shopify, "cli-shopify-secret-0123", `{"id":1}`, []string{"--id", "w-1", "--event", "orders.create"}, "w-1", "orders.create"},
		{verifier.Slack, "cli-slack-signing-secret-01", `{"type":"event_callback","event_id":"Ev1","event":{"type":"message"}}`, nil, "Ev1", "message"},
	}
	for _, tt := range tests {
		t.Run(tt.profile, func(t *testing.T) {
			body := filepath.Join(dir, tt.profile+".json")
			writeFile(t, body, tt.body)
			common := append([]string{"--profile", tt.profile, "--secret", tt.secret, "--body", body}, tt.args...)
			out, err := runCommand(t, sendCommand(), append([]string{"--url", srv.URL}, common...)...)
			if err != nil || out != "202 Accepted "+tt.wantID+"\n" {
				t.Fatalf("send: %q, %v", out, err)
			}
			r := <-received
			b := r.Body
			p, _ := verifier.LookupProfile(tt.profile)
			v, err := verifier.New(verifier.Config{Profile: tt.profile, Secrets: [][]byte{[]byte(tt.secret)}, Tolerance: p.DefaultTolerance})
			if err != nil {
				t.Fatal(err)
			}
			ev, err := v.Verify(r.Header, b)
			if err != nil || ev.ID != tt.wantID || ev.Type != tt.wantType || string(b) != tt.body {
				t.Fatalf("the sent delivery: %+v, %v", ev, err)
			}

			out, err = runCommand(t, signCommand(), common...)
			if err != nil {
				t.Fatal(err)
			}
			verifyArgs := []string{"--profile", tt.profile, "--secret", tt.secret, "--body", body}
			for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
				verifyArgs = append(verifyArgs, "--header", line)
			}
			if out, err := runCommand(t, verifyCommand(), verifyArgs...); err != nil || out != "ok: "+tt.wantType+" "+tt.wantID+"\n" {
				t.Fatalf("verify of sign's headers: %q, %v", out, err)
			}
			verifyArgs[3] = "cli-other-secret-0123456789"
			if tt.profile == verifier.StandardWebhooks {
				verifyArgs[3] = "whsec_Y2xpLW90aGVyLXN0YW5kYXJkLWtleS0wMQ=="
			}
			if _, err := runCommand(t, verifyCommand(), verifyArgs...); err == nil || !strings.Contains(err.Error(), "signature_mismatch") {
				t.Fatalf("verify with another secret: %v", err)
			}
		})
	}
	// A body its gateway would refuse is not sent.
	bad := filepath.Join(dir, "bad.json")
	writeFile(t, bad, `{"id":"evt_1"}`)
	if _, err := runCommand(t, sendCommand(), "--url", srv.URL, "--profile", "stripe", "--secret", "whsec_cli-stripe-0123456789", "--body", bad); err == nil ||
		!strings.Contains(err.Error(), "would refuse") {
		t.Fatalf("send of a body without a type: %v", err)
	}
	if _, err := runCommand(t, sendCommand(), "--url", srv.URL, "--profile", "svix", "--secret", "x", "--body", bad); err == nil {
		t.Fatal("an unknown profile was accepted")
	}
}

// writeFile writes content to path, failing the test if it cannot.
func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
