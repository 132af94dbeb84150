package webhookcli

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/hookgate/hookgate/verifier"
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

// signInputs reads what sign and verify work on: the --profile, the
// secret and the --body file.
func signInputs(c *cobra.Command) (p *verifier.Profile, secret, body []byte, err error) {
	if p, err = profileOf(c); err != nil {
		return nil, nil, nil, err
	}
	if secret, err = readSecret(c); err != nil {
		return nil, nil, nil, err
	}
	path, _ := c.Flags().GetString("body")
	body, err = readInput(path)
	return p, secret, body, err
}

// profileFlag adds --profile (see profileOf).
func profileFlag(c *cobra.Command) {
	c.Flags().String("profile", verifier.Ocriva, "the sender's scheme: "+strings.Join(verifier.ProfileNames(), ", "))
}

// profileFlags adds --profile, and the --id and --event of schemes that
// carry them in headers.
func profileFlags(c *cobra.Command) {
	profileFlag(c)
	f := c.Flags()
	f.String("id", "", "the event id, for profiles that send it in a header (standard-webhooks, github, shopify); default: a fresh one")
	f.String("event", "", "the event type: with --payload (ocriva), or for profiles that send it in a header (github, shopify)")
}

// profileOf returns the --profile.
func profileOf(c *cobra.Command) (*verifier.Profile, error) {
	name, _ := c.Flags().GetString("profile")
	p, ok := verifier.LookupProfile(name)
	if !ok {
		return nil, fmt.Errorf("--profile %q: known profiles are %s", name, strings.Join(verifier.ProfileNames(), ", "))
	}
	return p, nil
}

// signDelivery signs body as a sender of p does, now, with the --id and
// --event (ocriva: the envelope's eventType), and checks that the gateway
// would accept it: it returns the headers and the verified event.
func signDelivery(c *cobra.Command, p *verifier.Profile, secret, body []byte) (http.Header, *verifier.Event, error) {
	get := func(name string) string { v, _ := c.Flags().GetString(name); return v }
	now := time.Now()
	d := verifier.Delivery{ID: get("id"), Type: get("event"), Time: now, Body: body}
	if d.ID == "" {
		d.ID = verifier.NewEventID(now)
	}
	if p.Name == verifier.Ocriva {
		env, err := verifier.ParseEnvelope(body)
		if err != nil {
			return nil, nil, fmt.Errorf("the body is not a valid envelope: %w", err)
		}
		d.Type = env.Type
	}
	h, err := p.Sign([][]byte{secret}, d)
	if err != nil {
		return nil, nil, err
	}
	v, err := verifier.New(verifier.Config{Profile: p.Name, Secrets: [][]byte{secret}})
	if err != nil {
		return nil, nil, err
	}
	ev, err := v.Verify(h, body)
	if err != nil {
		return nil, nil, fmt.Errorf("a %s gateway would refuse this delivery: %w (%s); check the body, --id and --event", p.Name, err, verifier.KindOf(err))
	}
	return h, ev, nil
}

func signCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "sign --body <file|-> [--secret-file <file>] [--profile <name> [--id <id>] [--event <type>]]",
		Short: "Prints the signature headers for a body",
		Long: "Prints the X-Webhook-Signature value for a body; with --profile other than ocriva, the headers " +
			"a sender of that scheme sets, one \"Name: value\" a line, signed now.",
		RunE: func(c *cobra.Command, _ []string) error {
			p, secret, body, err := signInputs(c)
			if err != nil {
				return err
			}
			if p.Name == verifier.Ocriva {
				fmt.Fprintln(c.OutOrStdout(), verifier.Sign(secret, body))
				return nil
			}
			h, _, err := signDelivery(c, p, secret, body)
			if err != nil {
				return err
			}
			for _, k := range slices.Sorted(maps.Keys(h)) {
				fmt.Fprintf(c.OutOrStdout(), "%s: %s\n", k, h.Get(k))
			}
			return nil
		},
	}
	secretFlags(c)
	profileFlags(c)
	c.Flags().String("body", "-", "the body's file, - for standard input")
	return c
}

func verifyCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "verify --body <file|-> (--signature <sha256=...> | --header 'Name: value'...) [--secret-file <file>] [--profile <name>]",
		Short: "Checks a body's signature and envelope",
		Long: "Checks a delivery as a webhook_ingest route of the --profile would, but for the timestamp's " +
			"freshness. For ocriva, --signature is the X-Webhook-Signature value (the event header is taken from " +
			"the envelope); for the others, give the delivery's headers with --header.",
		RunE: func(c *cobra.Command, _ []string) error {
			p, secret, body, err := signInputs(c)
			if err != nil {
				return err
			}
			v, err := verifier.New(verifier.Config{Profile: p.Name, Secrets: [][]byte{secret}})
			if err != nil {
				return err
			}
			h := http.Header{}
			lines, _ := c.Flags().GetStringArray("header")
			for _, l := range lines {
				k, val, ok := strings.Cut(l, ":")
				if !ok {
					return fmt.Errorf("--header %q is not \"Name: value\"", l)
				}
				h.Add(strings.TrimSpace(k), strings.TrimSpace(val))
			}
			if sig, _ := c.Flags().GetString("signature"); sig != "" {
				h.Set(p.SignatureHeader, sig)
			}
			if p.Name == verifier.Ocriva && h.Get(verifier.EventHeader) == "" {
				env, err := verifier.ParseEnvelope(body)
				if err != nil {
					return err
				}
				h.Set(verifier.EventHeader, env.Type)
			}
			ev, err := v.Verify(h, body)
			if err != nil {
				return fmt.Errorf("%w (%s, HTTP %d)", err, verifier.KindOf(err), verifier.KindOf(err).Status())
			}
			if ev.Challenge != "" {
				fmt.Fprintf(c.OutOrStdout(), "ok: a url_verification challenge\n")
				return nil
			}
			fmt.Fprintf(c.OutOrStdout(), "ok: %s %s\n", ev.Type, ev.ID)
			return nil
		},
	}
	secretFlags(c)
	profileFlag(c)
	c.Flags().String("body", "-", "the body's file, - for standard input")
	c.Flags().String("signature", "", "the signature header's value")
	c.Flags().StringArray("header", nil, "a header of the delivery, \"Name: value\" (repeatable)")
	return c
}

func sendCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "send --url <url> (--payload <file> --event <type> | --envelope <file> | --body <file>) [--profile <name> [--id <id>] [--event <type>]]",
		Short: "Signs and POSTs a webhook delivery",
		Long: "Signs and POSTs a delivery as a sender of the --profile does (default ocriva). For ocriva the body " +
			"can be made from a --payload or an --envelope; the other profiles send a --body as it is, with --id " +
			"and --event where their scheme puts them in headers. The delivery is checked as the gateway would " +
			"check it (but for the timestamp's freshness) before it is sent.",
		RunE: func(c *cobra.Command, _ []string) error {
			secret, err := readSecret(c)
			if err != nil {
				return err
			}
			p, err := profileOf(c)
			if err != nil {
				return err
			}
			body, err := buildBody(c, p)
			if err != nil {
				return err
			}
			h, ev, err := signDelivery(c, p, secret, body)
			if err != nil {
				return err
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
			req.Header = h
			req.Header.Set("Content-Type", "application/json")
			client := &http.Client{Timeout: 30 * time.Second}
			resp, err := client.Do(req)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			answer, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
			id := ev.ID
			if id == "" {
				id = "(challenge)"
			}
			fmt.Fprintf(c.OutOrStdout(), "%s %s\n%s", resp.Status, id, answer)
			if len(answer) > 0 && !bytes.HasSuffix(answer, []byte("\n")) {
				fmt.Fprintln(c.OutOrStdout())
			}
			return nil
		},
	}
	secretFlags(c)
	profileFlags(c)
	f := c.Flags()
	f.String("url", "", "where to POST")
	f.String("payload", "", "a JSON file to wrap in a fresh envelope (ocriva)")
	f.String("envelope", "", "a whole envelope; its eventId and timestamp are replaced (ocriva)")
	f.String("body", "", "a file sent byte for byte, as it is")
	f.String("organization", "org_demo", "organizationId, with --payload")
	f.String("project", "proj_demo", "projectId, with --payload")
	f.String("out", "", "save the body sent to this file")
	_ = c.MarkFlagRequired("url")
	return c
}

// buildBody makes the delivery's body from whichever of --payload,
// --envelope or --body was given; profiles other than ocriva take --body
// only.
func buildBody(c *cobra.Command, p *verifier.Profile) ([]byte, error) {
	get := func(name string) string { v, _ := c.Flags().GetString(name); return v }
	payload, envelope, raw := get("payload"), get("envelope"), get("body")
	if p.Name != verifier.Ocriva {
		if payload != "" || envelope != "" || raw == "" {
			return nil, fmt.Errorf("--profile %s sends a --body as it is (--payload and --envelope make ocriva envelopes)", p.Name)
		}
		return readInput(raw)
	}
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
