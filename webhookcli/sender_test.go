package webhookcli

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

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
	type got struct {
		header http.Header
		body   []byte
	}
	received := make(chan got, 3)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		received <- got{r.Header.Clone(), b}
		w.WriteHeader(http.StatusAccepted)
		w.Write([]byte(`{"status":"accepted"}`))
	}))
	defer srv.Close()
	dir := t.TempDir()
	payload := filepath.Join(dir, "payload.json")
	os.WriteFile(payload, []byte(`{"n":12345678901234567890}`), 0o600)
	sent := filepath.Join(dir, "sent.json")

	out, err := runCommand(t, sendCommand(), "--url", srv.URL, "--secret", secret, "--event", "document.processed", "--payload", payload, "--out", sent)
	if err != nil || !strings.HasPrefix(out, "202 Accepted evt_") {
		t.Fatalf("send: %q, %v", out, err)
	}
	r := <-received
	v, _ := verifier.New(verifier.Config{Secrets: [][]byte{[]byte(secret)}, Tolerance: time.Minute})
	ev, err := v.Verify(r.header, r.body)
	if err != nil {
		t.Fatalf("the sent delivery does not verify: %v", err)
	}
	if string(ev.Payload) != `{"n":12345678901234567890}` || ev.OrganizationID != "org_demo" || !strings.HasPrefix(ev.ID, "evt_") {
		t.Fatalf("sent event %+v", ev)
	}
	if saved, _ := os.ReadFile(sent); !bytes.Equal(saved, r.body) {
		t.Fatal("--out did not save the bytes sent")
	}
	// --body repeats those bytes exactly; --envelope gets a fresh id.
	if _, err := runCommand(t, sendCommand(), "--url", srv.URL, "--secret", secret, "--body", sent); err != nil {
		t.Fatal(err)
	}
	if again := <-received; !bytes.Equal(again.body, r.body) {
		t.Fatal("--body changed the bytes")
	}
	if _, err := runCommand(t, sendCommand(), "--url", srv.URL, "--secret", secret, "--envelope", sent); err != nil {
		t.Fatal(err)
	}
	fresh := <-received
	ev2, err := v.Verify(fresh.header, fresh.body)
	if err != nil || ev2.ID == ev.ID || string(ev2.Payload) != string(ev.Payload) {
		t.Fatalf("--envelope: %+v, %v", ev2, err)
	}
}
