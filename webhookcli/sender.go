package webhookcli

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/hookgate/hookgate/verifier"
	"github.com/spf13/cobra"
)

// The test sender's commands: sign, verify and send, for trying a
// webhook_ingest route by hand.

func secretFlags(c *cobra.Command) {
	c.Flags().String("secret", "", "the secret (prefer --secret-file or HOOKGATE_SECRET)")
	c.Flags().String("secret-file", "", "a file holding the secret (one trailing newline is ignored)")
}

func readSecret(c *cobra.Command) ([]byte, error) {
	literal, _ := c.Flags().GetString("secret")
	file, _ := c.Flags().GetString("secret-file")
	switch {
	case literal != "" && file != "":
		return nil, errors.New("give --secret or --secret-file, not both")
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, err
		}
		return bytes.TrimSuffix(b, []byte("\n")), nil
	case literal != "":
		return []byte(literal), nil
	case os.Getenv("HOOKGATE_SECRET") != "":
		return []byte(os.Getenv("HOOKGATE_SECRET")), nil
	}
	return nil, errors.New("no secret: use --secret-file, HOOKGATE_SECRET or --secret")
}

// secretAndBody reads the secret and the --body file of sign and verify.
func secretAndBody(c *cobra.Command) (secret, body []byte, err error) {
	if secret, err = readSecret(c); err != nil {
		return nil, nil, err
	}
	path, _ := c.Flags().GetString("body")
	body, err = readInput(path)
	return secret, body, err
}

func signCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "sign --body <file|-> [--secret-file <file>]",
		Short: "Prints the X-Webhook-Signature value for a body",
		RunE: func(c *cobra.Command, _ []string) error {
			secret, body, err := secretAndBody(c)
			if err != nil {
				return err
			}
			fmt.Fprintln(c.OutOrStdout(), verifier.Sign(secret, body))
			return nil
		},
	}
	secretFlags(c)
	c.Flags().String("body", "-", "the body's file, - for standard input")
	return c
}

func verifyCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "verify --body <file|-> --signature <sha256=...> [--secret-file <file>]",
		Short: "Checks a body's signature and envelope",
		RunE: func(c *cobra.Command, _ []string) error {
			secret, body, err := secretAndBody(c)
			if err != nil {
				return err
			}
			v, err := verifier.New(verifier.Config{Secrets: [][]byte{secret}})
			if err != nil {
				return err
			}
			sig, _ := c.Flags().GetString("signature")
			env, err := verifier.ParseEnvelope(body)
			if err != nil {
				return err
			}
			h := http.Header{}
			h.Set(verifier.SignatureHeader, sig)
			h.Set(verifier.EventHeader, env.Type)
			if _, err := v.Verify(h, body); err != nil {
				return fmt.Errorf("%w (%s, HTTP %d)", err, verifier.KindOf(err), verifier.KindOf(err).Status())
			}
			fmt.Fprintf(c.OutOrStdout(), "ok: %s %s\n", env.Type, env.ID)
			return nil
		},
	}
	secretFlags(c)
	c.Flags().String("body", "-", "the body's file, - for standard input")
	c.Flags().String("signature", "", "the X-Webhook-Signature value")
	return c
}

func sendCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "send --url <url> (--payload <file> --event <type> | --envelope <file> | --body <file>)",
		Short: "Signs and POSTs a webhook delivery",
		RunE: func(c *cobra.Command, _ []string) error {
			secret, err := readSecret(c)
			if err != nil {
				return err
			}
			body, err := buildBody(c)
			if err != nil {
				return err
			}
			env, err := verifier.ParseEnvelope(body)
			if err != nil {
				return fmt.Errorf("the body is not a valid envelope: %w", err)
			}
			if out, _ := c.Flags().GetString("out"); out != "" {
				if err := os.WriteFile(out, body, 0o600); err != nil {
					return err
				}
			}
			url, _ := c.Flags().GetString("url")
			req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
			if err != nil {
				return err
			}
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set(verifier.EventHeader, env.Type)
			req.Header.Set(verifier.SignatureHeader, verifier.Sign(secret, body))
			client := &http.Client{Timeout: 30 * time.Second}
			resp, err := client.Do(req)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			answer, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
			fmt.Fprintf(c.OutOrStdout(), "%s %s\n%s", resp.Status, env.ID, answer)
			if len(answer) > 0 && !bytes.HasSuffix(answer, []byte("\n")) {
				fmt.Fprintln(c.OutOrStdout())
			}
			return nil
		},
	}
	secretFlags(c)
	f := c.Flags()
	f.String("url", "", "where to POST")
	f.String("event", "", "the eventType, with --payload")
	f.String("payload", "", "a JSON file to wrap in a fresh envelope")
	f.String("envelope", "", "a whole envelope; its eventId and timestamp are replaced")
	f.String("body", "", "a file sent byte for byte, as it is")
	f.String("organization", "org_demo", "organizationId, with --payload")
	f.String("project", "proj_demo", "projectId, with --payload")
	f.String("out", "", "save the body sent to this file")
	_ = c.MarkFlagRequired("url")
	return c
}

// buildBody makes the delivery's body from whichever of --payload,
// --envelope or --body was given.
func buildBody(c *cobra.Command) ([]byte, error) {
	get := func(name string) string { v, _ := c.Flags().GetString(name); return v }
	payload, envelope, raw := get("payload"), get("envelope"), get("body")
	given := 0
	for _, v := range []string{payload, envelope, raw} {
		if v != "" {
			given++
		}
	}
	if given != 1 {
		return nil, errors.New("give exactly one of --payload, --envelope and --body")
	}
	if raw != "" {
		return readInput(raw)
	}
	fields := map[string]json.RawMessage{}
	if envelope != "" {
		b, err := readInput(envelope)
		if err != nil {
			return nil, err
		}
		if err := json.Unmarshal(b, &fields); err != nil {
			return nil, fmt.Errorf("--envelope: %w", err)
		}
	} else {
		b, err := readInput(payload)
		if err != nil {
			return nil, err
		}
		if err := verifier.CheckJSON(b); err != nil {
			return nil, fmt.Errorf("--payload: %w", err)
		}
		event := get("event")
		if !verifier.ValidEventType(event) {
			return nil, fmt.Errorf("--event %q is not an event type", event)
		}
		fields["eventType"] = quote(event)
		fields["organizationId"] = quote(get("organization"))
		fields["projectId"] = quote(get("project"))
		fields["payload"] = bytes.TrimSpace(b)
	}
	now := time.Now()
	fields["eventId"] = quote(verifier.NewEventID(now))
	fields["timestamp"] = quote(verifier.FormatTimestamp(now))
	return verifier.EncodeEnvelope(fields), nil
}

func readInput(path string) ([]byte, error) {
	if path == "-" {
		return io.ReadAll(os.Stdin)
	}
	return os.ReadFile(strings.TrimSpace(path))
}

// quote encodes s as a JSON string.
func quote(s string) json.RawMessage {
	b, _ := json.Marshal(s)
	return b
}
