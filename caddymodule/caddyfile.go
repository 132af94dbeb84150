package caddymodule

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/dustin/go-humanize"

	"github.com/hookgate/hookgate/outbound"
	"github.com/hookgate/hookgate/verifier"
)

func init() {
	httpcaddyfile.RegisterGlobalOption("webhooks", parseGlobalOption)
	httpcaddyfile.RegisterHandlerDirective("webhook_ingest", parseHandler[Ingest])
	// A terminal responder: before respond, so that a catch-all respond in
	// the same site does not shadow it, and before reverse_proxy, which it
	// hands requests to in verify-only mode.
	httpcaddyfile.RegisterDirectiveOrder("webhook_ingest", httpcaddyfile.Before, "respond")
	httpcaddyfile.RegisterHandlerDirective("webhook_publish", parseHandler[Publish])
	httpcaddyfile.RegisterDirectiveOrder("webhook_publish", httpcaddyfile.Before, "respond")
}

// parseGlobalOption parses the webhooks global option; see App.UnmarshalCaddyfile.
// A second webhooks block is refused rather than silently replacing the
// first.
func parseGlobalOption(d *caddyfile.Dispenser, existing any) (any, error) {
	if existing != nil {
		return nil, d.Err("webhooks: the global option is given twice; put its settings in one block")
	}
	app := new(App)
	if err := app.UnmarshalCaddyfile(d); err != nil {
		return nil, err
	}
	return httpcaddyfile.App{Name: "webhooks", Value: caddyconfig.JSON(app, nil)}, nil
}

// parseHandler parses a handler directive with the handler's
// UnmarshalCaddyfile.
func parseHandler[T any, PT interface {
	*T
	caddyhttp.MiddlewareHandler
	caddyfile.Unmarshaler
}](h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	m := PT(new(T))
	err := m.UnmarshalCaddyfile(h.Dispenser)
	return m, err
}

// UnmarshalCaddyfile sets up the app from Caddyfile tokens. Syntax:
//
//	webhooks {
//		backend <name> {
//			<the backend's options>
//		}
//		storage              <dir>
//		min_free_disk        <size>
//		max_items            <n>
//		max_bytes            <size>
//		max_record_bytes     <size>
//		workers              <n>
//		dead_retention       <duration>
//		attempt_retention    <duration>
//		max_unverified_bytes <size>
//	}
//
// The block may appear once. The backend is a module of the
// webhooks.backends namespace (default: badger); storage and min_free_disk
// are a shorthand for "backend badger { storage …; min_free_disk … }" and
// go with no other backend block.
func (a *App) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	return parseDirective(d, "webhooks", a.checkShorthand, options{
		"backend":              func() error { return a.unmarshalBackend(d) },
		"storage":              arg(d, stringArg(&a.Storage)),
		"max_items":            arg(d, positiveInt(d, &a.MaxItems)),
		"max_bytes":            arg(d, sizeArg(d, &a.MaxBytes)),
		"max_record_bytes":     arg(d, sizeArg(d, &a.MaxRecordBytes)),
		"min_free_disk":        arg(d, sizeArg(d, &a.MinFreeDisk)),
		"workers":              arg(d, positiveInt(d, &a.Workers)),
		"dead_retention":       arg(d, durationArg(d, &a.DeadRetention)),
		"attempt_retention":    arg(d, durationArg(d, &a.AttemptRetention)),
		"max_unverified_bytes": arg(d, sizeArg(d, &a.MaxUnverifiedBytes)),
	})
}

// unmarshalBackend parses "backend <name> { … }" with the module's own
// Caddyfile syntax.
func (a *App) unmarshalBackend(d *caddyfile.Dispenser) error {
	if a.BackendRaw != nil {
		return d.Err("webhooks: backend is given twice")
	}
	if !d.NextArg() {
		return d.ArgErr()
	}
	name := d.Val()
	mod, err := caddyfile.UnmarshalModule(d, "webhooks.backends."+name)
	if err != nil {
		return err
	}
	a.BackendRaw = caddyconfig.JSONModuleObject(mod, "backend", name, nil)
	return nil
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	webhook_ingest [<matcher>] {
//		name                  <route>
//		profile               ocriva|standard-webhooks|github|stripe|shopify|slack
//		secret                <secret> [<secret>...]
//		insecure_no_signature
//		events                <pattern>...
//		tolerance             <duration>
//		dedupe_window         <duration>
//		max_body              <size>
//		read_timeout          <duration>
//		forward <url> {
//			max_attempts <n>
//			max_age      <duration>
//			backoff      <min> <max>
//			timeout      <duration>
//			concurrency  <n>
//			header_up    <name> <value>
//		}
//	}
func (h *Ingest) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	return parseDirective(d, "webhook_ingest", h.validate, options{
		"name":    arg(d, stringArg(&h.Name)),
		"profile": arg(d, stringArg(&h.Profile)),
		"secret":  func() error { return secretArgs(d, &h.Secrets) },
		"insecure_no_signature": func() error {
			if d.NextArg() {
				return d.ArgErr()
			}
			h.InsecureNoSignature = true
			return nil
		},
		"events": func() error { return eventArgs(d, &h.Events) },
		"tolerance": arg(d, func(s string) error {
			v, err := caddy.ParseDuration(s)
			if err != nil || v < 0 {
				return d.Errf("tolerance: %q is not a duration", s)
			}
			t := caddy.Duration(v)
			h.Tolerance = &t
			return nil
		}),
		"dedupe_window": arg(d, durationArg(d, &h.DedupeWindow)),
		"max_body":      arg(d, sizeArg(d, &h.MaxBody)),
		"read_timeout":  arg(d, durationArg(d, &h.ReadTimeout)),
		"forward":       func() error { return h.parseForward(d) },
	})
}

func (h *Ingest) parseForward(d *caddyfile.Dispenser) error {
	if h.Forward != nil {
		return d.Err("webhook_ingest: forward given twice")
	}
	f := &Forward{}
	if !d.NextArg() {
		return d.ArgErr()
	}
	f.URL = d.Val()
	if d.NextArg() {
		return d.ArgErr()
	}
	err := parseBlock(d, d.Nesting(), "forward", options{
		"max_attempts": arg(d, positiveInt(d, &f.MaxAttempts)),
		"max_age":      arg(d, durationArg(d, &f.MaxAge)),
		"backoff":      func() error { return backoffArgs(d, &f.BackoffMin, &f.BackoffMax) },
		"timeout":      arg(d, durationArg(d, &f.Timeout)),
		"concurrency":  arg(d, positiveInt(d, &f.Concurrency)),
		"header_up":    func() error { return headerArgs(d, &f.HeaderUp) },
	})
	if err != nil {
		return err
	}
	h.Forward = f // checked with the rest (Ingest.validate)
	return nil
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	webhook_publish [<matcher>] {
//		organization  <id>
//		project       <id>
//		attempts      <n>
//		backoff       <min> <max>
//		timeout       <duration>
//		allow_private <cidr>...
//		dedupe_window <duration>
//		max_body      <size>
//		subscriber <name> <url> {
//			scheme ocriva|standard-webhooks
//			secret <secret> [<secret>...]
//			events <pattern>...
//			allow_private <cidr>...
//			header <name> <value>
//		}
//	}
func (p *Publish) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	return parseDirective(d, "webhook_publish", p.validate, options{
		"organization":  arg(d, stringArg(&p.Organization)),
		"project":       arg(d, stringArg(&p.Project)),
		"attempts":      arg(d, positiveInt(d, &p.Attempts)),
		"backoff":       func() error { return backoffArgs(d, &p.BackoffMin, &p.BackoffMax) },
		"timeout":       arg(d, durationArg(d, &p.Timeout)),
		"dedupe_window": arg(d, durationArg(d, &p.DedupeWindow)),
		"max_body":      arg(d, sizeArg(d, &p.MaxBody)),
		"allow_private": func() error { return allowPrivateArgs(d, &p.AllowPrivate) },
		"subscriber":    func() error { return p.parseSubscriber(d) },
	})
}

func (p *Publish) parseSubscriber(d *caddyfile.Dispenser) error {
	var sub Subscriber
	if !d.AllArgs(&sub.Name, &sub.URL) {
		return d.ArgErr()
	}
	err := parseBlock(d, d.Nesting(), "subscriber", options{
		"scheme":        arg(d, stringArg(&sub.Scheme)),
		"secret":        func() error { return secretArgs(d, &sub.Secrets) },
		"events":        func() error { return eventArgs(d, &sub.Events) },
		"allow_private": func() error { return allowPrivateArgs(d, &sub.AllowPrivate) },
		"header":        func() error { return headerArgs(d, &sub.Header) },
	})
	if err != nil {
		return err
	}
	p.Subscribers = append(p.Subscribers, sub)
	return nil
}

// headerArgs reads "<name> <value>" and adds the value to the header.
func headerArgs(d *caddyfile.Dispenser, dst *http.Header) error {
	var name, value string
	if !d.AllArgs(&name, &value) {
		return d.ArgErr()
	}
	if *dst == nil {
		*dst = http.Header{}
	}
	(*dst)[name] = append((*dst)[name], value)
	return nil
}

// allowPrivateArgs reads one or more CIDRs or addresses.
func allowPrivateArgs(d *caddyfile.Dispenser, dst *[]string) error {
	return listArgs(d, dst, func(args []string) error {
		for _, a := range args {
			if _, err := outbound.ParsePrefix(a); err != nil {
				return d.Errf("allow_private: %q is not a CIDR or an address", a)
			}
		}
		return nil
	})
}

// secretArgs reads one or more secrets, each a placeholder (see checkSecret).
func secretArgs(d *caddyfile.Dispenser, dst *[]string) error {
	return listArgs(d, dst, func(args []string) error {
		for _, s := range args {
			if err := checkSecret(d, s); err != nil {
				return err
			}
		}
		return nil
	})
}

// eventArgs reads one or more event-type patterns.
func eventArgs(d *caddyfile.Dispenser, dst *[]string) error {
	return listArgs(d, dst, func(args []string) error {
		if _, err := verifier.CompilePatterns(args); err != nil {
			return d.Errf("events: %v", err)
		}
		return nil
	})
}

// listArgs reads one or more arguments and, if check (when given) accepts
// them, appends them to dst.
func listArgs(d *caddyfile.Dispenser, dst *[]string, check func(args []string) error) error {
	args := d.RemainingArgs()
	if len(args) == 0 {
		return d.ArgErr()
	}
	if check != nil {
		if err := check(args); err != nil {
			return err
		}
	}
	*dst = append(*dst, args...)
	return nil
}

// backoffArgs reads "backoff <min> <max>".
func backoffArgs(d *caddyfile.Dispenser, lo, hi *caddy.Duration) error {
	var a, b string
	if !d.AllArgs(&a, &b) {
		return d.ArgErr()
	}
	if err := durationArg(d, lo)(a); err != nil {
		return err
	}
	if err := durationArg(d, hi)(b); err != nil {
		return err
	}
	if *lo > *hi {
		return d.Errf("backoff: minimum %s is above maximum %s", a, b)
	}
	return nil
}

// checkSecret refuses a secret written literally: it would be stored in the
// adapted JSON config, shown by the admin API's /config/ and saved in
// autosave.json. (Caddy's {$VAR} is substituted before this parser runs, so
// it arrives here as a literal too.) Placeholders are resolved, and their
// values checked, when the config loads.
func checkSecret(d *caddyfile.Dispenser, s string) error {
	if s == "" {
		return d.Err("secret: empty secret")
	}
	if !strings.Contains(s, "{") {
		return d.Err("secret: write it as a placeholder, {env.NAME} or {file./path}: a literal secret would be stored in the config and shown by the admin API")
	}
	return nil
}

// options maps the names of a block's options to their parsers, which read
// the option's arguments (and any block of its own) from the dispenser.
type options map[string]func() error

// parseDirective reads a directive or global option that takes no
// argument, and its block with opts (see parseBlock); then check, which
// sees the options together, has the last word.
func parseDirective(d *caddyfile.Dispenser, name string, check func() error, opts options) error {
	d.Next() // the directive's name
	if d.NextArg() {
		return d.ArgErr()
	}
	if err := parseBlock(d, 0, name, opts); err != nil {
		return err
	}
	if err := check(); err != nil {
		return d.Err(err.Error())
	}
	return nil
}

// parseBlock reads the options of the block at nesting with opts; an
// option opts has no parser for is refused, named with the block's name.
func parseBlock(d *caddyfile.Dispenser, nesting int, name string, opts options) error {
	for d.NextBlock(nesting) {
		opt := d.Val()
		parse, ok := opts[opt]
		if !ok {
			return d.Errf("%s: unknown option %q", name, opt)
		}
		if err := parse(); err != nil {
			return err
		}
	}
	return nil
}

// arg is the parser of an option with exactly one argument, handed to set.
func arg(d *caddyfile.Dispenser, set func(string) error) func() error {
	return func() error { return oneArg(d, set) }
}

// backendBlock reads a backend module's tokens: the backend's name, no
// argument after it, and a block whose options option reads.
func backendBlock(d *caddyfile.Dispenser, option func(opt string) error) error {
	d.Next() // the backend's name
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		if err := option(d.Val()); err != nil {
			return err
		}
	}
	return nil
}

// stringArg sets dst to the argument.
func stringArg(dst *string) func(string) error {
	return func(s string) error { *dst = s; return nil }
}

// oneArg reads exactly one argument and hands it to set.
func oneArg(d *caddyfile.Dispenser, set func(string) error) error {
	var v string
	if !d.AllArgs(&v) {
		return d.ArgErr()
	}
	return set(v)
}

func durationArg(d *caddyfile.Dispenser, dst *caddy.Duration) func(string) error {
	return func(s string) error {
		v, err := caddy.ParseDuration(s)
		if err != nil || v < 0 {
			return d.Errf("%s: %q is not a duration", d.Val(), s)
		}
		*dst = caddy.Duration(v)
		return nil
	}
}

func sizeArg(d *caddyfile.Dispenser, dst *int64) func(string) error {
	return func(s string) error {
		v, err := humanize.ParseBytes(s)
		if err != nil || v > 1<<62 {
			return d.Errf("%q is not a size", s)
		}
		*dst = int64(v)
		return nil
	}
}

// positiveInt reads a positive whole number into an int or an int64.
func positiveInt[T int | int64](d *caddyfile.Dispenser, dst *T) func(string) error {
	return func(s string) error {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil || v <= 0 || int64(T(v)) != v {
			return d.Errf("%q is not a positive number", s)
		}
		*dst = T(v)
		return nil
	}
}

// Interface guards.
var (
	_ caddyfile.Unmarshaler = (*App)(nil)
	_ caddyfile.Unmarshaler = (*Ingest)(nil)
	_ caddyfile.Unmarshaler = (*Publish)(nil)
)
