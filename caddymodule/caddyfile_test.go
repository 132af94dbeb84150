package caddymodule

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

func TestUnmarshalIngest(t *testing.T) {
	tol := caddy.Duration(10 * time.Minute)
	tests := []struct {
		name    string
		input   string
		want    *Ingest
		wantErr string
	}{
		{
			name: "every option",
			input: `webhook_ingest {
				name ocriva
				secret {env.A} {file./run/b}
				secret {env.C}
				events document.* batch.completed
				tolerance 10m
				dedupe_window 24h
				max_body 64KiB
				read_timeout 5s
				forward http://127.0.0.1:8080/in {
					max_attempts 20
					max_age 12h
					backoff 1s 10m
					timeout 15s
					concurrency 4
					header_up X-Tenant acme
				}
			}`,
			want: &Ingest{
				Name: "ocriva", Secrets: []string{"{env.A}", "{file./run/b}", "{env.C}"},
				Events: []string{"document.*", "batch.completed"}, Tolerance: &tol,
				DedupeWindow: caddy.Duration(24 * time.Hour), MaxBody: 64 << 10, ReadTimeout: caddy.Duration(5 * time.Second),
				Forward: &Forward{
					URL: "http://127.0.0.1:8080/in", MaxAttempts: 20, MaxAge: caddy.Duration(12 * time.Hour),
					BackoffMin: caddy.Duration(time.Second), BackoffMax: caddy.Duration(10 * time.Minute),
					Timeout: caddy.Duration(15 * time.Second), Concurrency: 4, HeaderUp: map[string][]string{"X-Tenant": {"acme"}},
				},
			},
		},
		{
			name:  "verify-only",
			input: "webhook_ingest {\n name legacy\n secret {env.A}\n}",
			want:  &Ingest{Name: "legacy", Secrets: []string{"{env.A}"}},
		},
		{
			name:  "insecure",
			input: "webhook_ingest {\n name x\n insecure_no_signature\n}",
			want:  &Ingest{Name: "x", InsecureNoSignature: true},
		},
		{
			name:  "profile and several secrets",
			input: "webhook_ingest {\n name gh\n profile github\n secret {env.NEW} {env.OLD}\n}",
			want:  &Ingest{Name: "gh", Profile: "github", Secrets: []string{"{env.NEW}", "{env.OLD}"}},
		},
		{name: "unknown profile", input: "webhook_ingest {\n name x\n profile svix\n secret {env.A}\n}", wantErr: `unknown profile "svix"`},
		{name: "github with a tolerance", input: "webhook_ingest {\n name x\n profile github\n secret {env.A}\n tolerance 5m\n}", wantErr: "signs no timestamp"},
		{name: "insecure beyond ocriva", input: "webhook_ingest {\n name x\n profile slack\n insecure_no_signature\n}", wantErr: "ocriva profile only"},
		{name: "window under a profile's tolerance", input: "webhook_ingest {\n name x\n profile stripe\n secret {env.A}\n tolerance 2h\n dedupe_window 2h\n}", wantErr: "must be at least tolerance 2h0m0s"},
		{name: "empty secret", input: "webhook_ingest {\n name x\n secret \"\"\n}", wantErr: "empty secret"},
		{name: "literal secret", input: "webhook_ingest {\n name x\n secret a-literal-secret-of-enough-length\n}", wantErr: "write it as a placeholder"},
		{name: "no secret", input: "webhook_ingest {\n name x\n}", wantErr: "a secret is required"},
		{name: "secret and insecure", input: "webhook_ingest {\n name x\n secret {env.A}\n insecure_no_signature\n}", wantErr: "exclude each other"},
		{name: "window under tolerance", input: "webhook_ingest {\n name x\n secret {env.A}\n tolerance 1h\n dedupe_window 1h\n}", wantErr: "dedupe_window 1h0m0s must be at least tolerance 1h0m0s plus 5m0s"},
		{name: "unknown option", input: "webhook_ingest {\n name x\n secret {env.A}\n colour blue\n}", wantErr: `unknown option "colour"`},
		{name: "unknown forward option", input: "webhook_ingest {\n secret {env.A}\n forward http://a {\n retries 3\n }\n}", wantErr: `forward: unknown option "retries"`},
		{name: "bad forward url", input: "webhook_ingest {\n secret {env.A}\n forward ftp://a\n}", wantErr: "not an http(s) URL"},
		{name: "backoff reversed", input: "webhook_ingest {\n secret {env.A}\n forward http://a {\n backoff 1m 1s\n }\n}", wantErr: "above maximum"},
		{name: "bad pattern", input: "webhook_ingest {\n name x\n secret {env.A}\n events doc*ment\n}", wantErr: "events:"},
		{name: "verify-only without name", input: "webhook_ingest {\n secret {env.A}\n}", wantErr: "name is required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := new(Ingest)
			if checkError(t, got.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tt.input)), tt.wantErr) {
				return
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestUnmarshalApp(t *testing.T) {
	input := `webhooks {
		storage /var/lib/hookgate
		max_items 5000
		max_bytes 2GiB
		max_record_bytes 512MiB
		min_free_disk 1GB
		workers 32
		dead_retention 14d
		attempt_retention 30d
	}`
	got := new(App)
	if err := got.UnmarshalCaddyfile(caddyfile.NewTestDispenser(input)); err != nil {
		t.Fatal(err)
	}
	want := &App{Storage: "/var/lib/hookgate", MaxItems: 5000, MaxBytes: 2 << 30, MaxRecordBytes: 512 << 20, MinFreeDisk: 1_000_000_000,
		Workers: 32, DeadRetention: caddy.Duration(14 * 24 * time.Hour), AttemptRetention: caddy.Duration(30 * 24 * time.Hour)}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	bad := new(App)
	if err := bad.UnmarshalCaddyfile(caddyfile.NewTestDispenser("webhooks {\n storage_dir x\n}")); err == nil || !strings.Contains(err.Error(), `unknown option "storage_dir"`) {
		t.Fatalf("unknown option: %v", err)
	}
}

// TestUnmarshalBackend: "backend <name> { … }" in the webhooks block becomes
// the backend module's JSON; the shorthand goes with no backend block.
func TestUnmarshalBackend(t *testing.T) {
	for _, tt := range []struct {
		name, input, want, wantErr string
	}{
		{"badger", "webhooks {\n backend badger {\n storage /srv/hooks\n min_free_disk 1GiB\n }\n max_items 10\n}",
			`{"backend":"badger","min_free_disk":1073741824,"storage":"/srv/hooks"}`, ""},
		{"badger, defaults", "webhooks {\n backend badger\n}", `{"backend":"badger"}`, ""},
		{"no name", "webhooks {\n backend\n}", "", "wrong argument count"},
		{"unknown backend", "webhooks {\n backend etcd {\n endpoints x\n }\n}", "", "webhooks.backends.etcd"},
		{"unknown option", "webhooks {\n backend badger {\n replicas 3\n }\n}", "", `unknown option "replicas" in backend badger`},
		{"argument after the name", "webhooks {\n backend badger /srv/hooks\n}", "", "wrong argument count"},
		{"twice", "webhooks {\n backend badger\n backend badger\n}", "", "backend is given twice"},
		{"storage beside it", "webhooks {\n storage /srv/hooks\n backend badger\n}", "", "shorthand"},
		{"min_free_disk beside it", "webhooks {\n backend badger {\n storage /srv/hooks\n }\n min_free_disk 1GiB\n}", "", "shorthand"},
		{"nats", "webhooks {\n backend nats {\n servers nats://a:4222 nats://b:4222\n servers nats://c:4222\n token {env.NATS_TOKEN}\n tls_ca /etc/ca.pem\n prefix HG\n replicas 5\n verify_sync http://a:8222\n accept_risk\n request_timeout 5s\n lease_margin 2s\n }\n}",
			`{"accept_risk":true,"backend":"nats","lease_margin":2000000000,"prefix":"HG","replicas":5,"request_timeout":5000000000,"servers":["nats://a:4222","nats://b:4222","nats://c:4222"],"tls_ca":"/etc/ca.pem","token":"{env.NATS_TOKEN}","verify_sync":["http://a:8222"]}`, ""},
		{"nats user", "webhooks {\n backend nats {\n servers nats://a:4222\n user hookgate {env.NATS_PASSWORD}\n credentials /etc/hg.creds\n }\n}",
			`{"backend":"nats","credentials":"/etc/hg.creds","password":"{env.NATS_PASSWORD}","servers":["nats://a:4222"],"user":"hookgate"}`, ""},
		{"nats literal token", "webhooks {\n backend nats {\n servers nats://a:4222\n token s3cret\n }\n}", "", "placeholder"},
		{"nats literal password", "webhooks {\n backend nats {\n servers nats://a:4222\n user hookgate s3cret\n }\n}", "", "placeholder"},
		{"nats user without password", "webhooks {\n backend nats {\n user hookgate\n }\n}", "", "wrong argument count"},
		{"nats replicas", "webhooks {\n backend nats {\n replicas 0\n }\n}", "", "not a positive number"},
		{"nats unknown option", "webhooks {\n backend nats {\n storage /srv\n }\n}", "", `unknown option "storage" in backend nats`},
		{"nats accept_risk with an argument", "webhooks {\n backend nats {\n accept_risk yes\n }\n}", "", "wrong argument count"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := new(App)
			if checkError(t, got.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tt.input)), tt.wantErr) {
				return
			}
			if string(got.BackendRaw) != tt.want {
				t.Fatalf("backend %s, want %s", got.BackendRaw, tt.want)
			}
		})
	}
}

// checkError fails the test unless err matches want: an error containing
// want, or no error if want is "". It reports whether an error was wanted,
// so that the case ends there.
func checkError(t *testing.T, err error, want string) bool {
	t.Helper()
	if want != "" {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("error %v, want one containing %q", err, want)
		}
		return true
	}
	if err != nil {
		t.Fatal(err)
	}
	return false
}
