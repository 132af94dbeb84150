package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/nats-io/nats.go"

	"github.com/hookgate/hookgate/natsspool"
	"github.com/hookgate/hookgate/spool"
)

func init() {
	caddy.RegisterModule(new(NATSBackend))
}

// NATSBackend keeps the events in NATS JetStream, so that several gateways
// share one queue, one dedupe and one set of dead letters (see the README,
// "Several gateways on NATS"). Gateways whose backends name the same servers
// and prefix share the store.
type NATSBackend struct {
	// Servers are the NATS URLs (nats://host:4222). Required.
	Servers []string `json:"servers,omitempty"`
	// Credentials is a NATS credentials file (JWT and NKey seed).
	Credentials string `json:"credentials,omitempty"`
	// Token authenticates with a token; placeholders such as
	// {env.NATS_TOKEN} are replaced when the config loads.
	Token string `json:"token,omitempty"`
	// User and Password authenticate with a user; placeholders in Password
	// are replaced when the config loads.
	User     string `json:"user,omitempty"`
	Password string `json:"password,omitempty"`
	// TLSCA is a PEM file of the CAs that sign the servers' certificates:
	// with it the connection uses TLS.
	TLSCA string `json:"tls_ca,omitempty"`
	// Prefix names the streams, the bucket and the subjects. Default
	// HOOKGATE.
	Prefix string `json:"prefix,omitempty"`
	// Replicas of the streams and the bucket. Default 3.
	Replicas int `json:"replicas,omitempty"`
	// VerifySync are the servers' monitoring URLs (http://host:8222), from
	// which the backend checks that each server hosting the streams fsyncs
	// every write before it acknowledges (sync_interval: always).
	VerifySync []string `json:"verify_sync,omitempty"`
	// AcceptRisk starts the backend although the durability check fails
	// (fewer than 3 replicas, a server that does not sync always, an
	// unknown sync setting), logging each failed check.
	AcceptRisk bool `json:"accept_risk,omitempty"`
	// RequestTimeout bounds every NATS request. Default 10s.
	RequestTimeout caddy.Duration `json:"request_timeout,omitempty"`
	// LeaseMargin is added to a route's timeout to give how long a
	// delivery may stay unacknowledged before another gateway takes the
	// event over: how long the events in flight at a gateway that dies
	// wait. Default 30s.
	LeaseMargin caddy.Duration `json:"lease_margin,omitempty"`

	name    string
	connect []nats.Option
}

// CaddyModule returns the Caddy module information.
func (*NATSBackend) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "webhooks.backends.nats",
		New: func() caddy.Module { return new(NATSBackend) },
	}
}

// Provision replaces the placeholders of the secrets and derives the
// store's name.
func (b *NATSBackend) Provision(caddy.Context) error {
	repl := caddy.NewReplacer()
	b.connect = nil
	if b.Credentials != "" {
		b.connect = append(b.connect, nats.UserCredentials(b.Credentials))
	}
	if b.Token != "" {
		tok, err := repl.ReplaceOrErr(b.Token, true, true)
		if err != nil {
			return fmt.Errorf("webhooks backend nats: token: %w", err)
		}
		b.connect = append(b.connect, nats.Token(tok))
	}
	if b.User != "" {
		pw, err := repl.ReplaceOrErr(b.Password, true, true)
		if err != nil {
			return fmt.Errorf("webhooks backend nats: password: %w", err)
		}
		b.connect = append(b.connect, nats.UserInfo(b.User, pw))
	}
	if b.TLSCA != "" {
		b.connect = append(b.connect, nats.RootCAs(b.TLSCA))
	}
	b.name = natsspool.Options{Servers: b.Servers, Prefix: b.Prefix}.Name()
	return nil
}

// Validate checks the settings that need no server.
func (b *NATSBackend) Validate() error {
	switch {
	case len(b.Servers) == 0:
		return errors.New("webhooks backend nats: servers is required")
	case b.Replicas < 0:
		return errors.New("webhooks backend nats: replicas must not be negative")
	case b.RequestTimeout < 0, b.LeaseMargin < 0:
		return errors.New("webhooks backend nats: request_timeout and lease_margin must not be negative")
	case b.Token != "" && (b.User != "" || b.Credentials != ""),
		b.User != "" && b.Credentials != "":
		return errors.New("webhooks backend nats: give one of credentials, token, or user")
	case b.Password != "" && b.User == "":
		return errors.New("webhooks backend nats: password needs a user")
	}
	for _, s := range b.Servers {
		// The servers are part of the store's name, which the stats show.
		if u, err := url.Parse(s); err == nil && u.User != nil {
			return fmt.Errorf("webhooks backend nats: server %s: give credentials with user, token or credentials, not in the URL", u.Redacted())
		}
	}
	return nil
}

// StoreName is the name natsspool gives the store: "nats:", the prefix,
// "@" and the servers.
func (b *NATSBackend) StoreName() string { return b.name }

// OpenStore connects to the servers, creates or checks the streams and the
// bucket, and checks their durability.
func (b *NATSBackend) OpenStore(c StoreConfig) (spool.Backend, error) {
	timeout := time.Duration(b.RequestTimeout)
	if timeout == 0 {
		timeout = natsspool.DefaultRequestTimeout
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*timeout)
	defer cancel()
	s, err := natsspool.Open(ctx, natsspool.Options{
		Servers:        b.Servers,
		Connect:        b.connect,
		Prefix:         b.Prefix,
		Replicas:       b.Replicas,
		VerifySync:     b.VerifySync,
		AcceptRisk:     b.AcceptRisk,
		RequestTimeout: timeout,
		LeaseMargin:    time.Duration(b.LeaseMargin),
		Limits:         c.Limits,
		Logger:         c.Logger,
		Observe:        c.Observe,
	})
	if err != nil {
		return nil, fmt.Errorf("webhooks backend nats: %w", err)
	}
	return s, nil
}

// UnmarshalCaddyfile sets up the backend from Caddyfile tokens. Syntax, in
// the webhooks global option:
//
//	backend nats {
//		servers         <url>...
//		credentials     <file>
//		token           <token>
//		user            <name> <password>
//		tls_ca          <file>
//		prefix          <name>
//		replicas        <n>
//		verify_sync     <monitoring url>...
//		accept_risk
//		request_timeout <duration>
//		lease_margin    <duration>
//	}
//
// credentials, token and user are alternatives; the token and the password
// are placeholders ({env.NATS_TOKEN}, {file./path}), never written literally.
func (b *NATSBackend) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	return backendBlock(d, func(opt string) error {
		switch opt {
		case "servers":
			return listArgs(d, &b.Servers, nil)
		case "credentials":
			return oneArg(d, stringArg(&b.Credentials))
		case "token":
			return oneArg(d, func(s string) error { b.Token = s; return checkSecret(d, s) })
		case "user":
			if !d.Args(&b.User, &b.Password) || d.NextArg() {
				return d.ArgErr()
			}
			return checkSecret(d, b.Password)
		case "tls_ca":
			return oneArg(d, stringArg(&b.TLSCA))
		case "prefix":
			return oneArg(d, stringArg(&b.Prefix))
		case "replicas":
			return oneArg(d, positiveInt(d, &b.Replicas))
		case "verify_sync":
			return listArgs(d, &b.VerifySync, nil)
		case "accept_risk":
			if d.NextArg() {
				return d.ArgErr()
			}
			b.AcceptRisk = true
			return nil
		case "request_timeout":
			return oneArg(d, durationArg(d, &b.RequestTimeout))
		case "lease_margin":
			return oneArg(d, durationArg(d, &b.LeaseMargin))
		}
		return d.Errf("webhooks: unknown option %q in backend nats", opt)
	})
}

// Interface guards.
var (
	_ BackendModule         = (*NATSBackend)(nil)
	_ caddy.Provisioner     = (*NATSBackend)(nil)
	_ caddy.Validator       = (*NATSBackend)(nil)
	_ caddyfile.Unmarshaler = (*NATSBackend)(nil)
)
