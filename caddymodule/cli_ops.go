package caddymodule

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/hookgate/hookgate/adminapi"
)

// The operator commands: `caddy webhook stats|dead|events|pause|resume|enable`
// talk to the running instance's admin API (/webhooks/, see admin.go).

// opsCommands returns the operator subcommands of `caddy webhook`.
func opsCommands() []*cobra.Command {
	dead := &cobra.Command{
		Use:   "dead list|replay|delete",
		Short: "Lists, replays and deletes dead letters",
	}
	dead.AddCommand(deadListCommand(), deadReplayCommand(), deadDeleteCommand())
	return []*cobra.Command{
		statsCommand(), dead, eventsCommand(),
		routeStateCommand("pause"), routeStateCommand("resume"), enableCommand(),
	}
}

// opsAdminFlags adds the flags every operator command has.
func opsAdminFlags(c *cobra.Command) {
	f := c.Flags()
	f.Bool("json", false, "print the admin API's JSON answer as it is")
	f.String("address", "", "the admin API's address, if not the default (or the one in --config)")
	f.StringP("config", "c", "", "a configuration file to read the admin address from, if --address is not used")
	f.StringP("adapter", "a", "", "the config adapter of --config")
	f.String("storage", "", "the storage directory, when the instance has several open")
}

// opsAdminCall is one request to the admin API's /webhooks/ endpoints.
type opsAdminCall struct {
	method string
	path   string     // under /webhooks/, already escaped
	query  url.Values // may be nil
	body   any        // marshaled to JSON unless nil
}

// opsCallAdmin sends call to the admin address the command's flags determine
// and returns the answer's body. A 4xx or 5xx answer becomes an error with
// the API's "error" message.
func opsCallAdmin(c *cobra.Command, call opsAdminCall) ([]byte, error) {
	get := func(name string) string { v, _ := c.Flags().GetString(name); return v }
	addr, err := caddycmd.DetermineAdminAPIAddress(get("address"), nil, get("config"), get("adapter"))
	if err != nil {
		return nil, fmt.Errorf("couldn't determine the admin API address: %w", err)
	}
	q := url.Values{}
	for k, vs := range call.query {
		for _, v := range vs {
			if v != "" {
				q.Add(k, v)
			}
		}
	}
	if s := get("storage"); s != "" {
		q.Set("storage", s)
	}
	uri := "/webhooks/" + call.path
	if len(q) > 0 {
		uri += "?" + q.Encode()
	}
	var body io.Reader
	if call.body != nil {
		b, err := json.Marshal(call.body)
		if err != nil {
			return nil, err
		}
		body = bytes.NewReader(b)
	}
	resp, err := caddycmd.AdminAPIRequest(addr, call.method, uri, nil, body)
	if err != nil {
		return nil, opsAdminError(addr, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("reading the admin API's answer: %w", err)
	}
	return b, nil
}

// AdminAPIRequest reports an error answer as this text followed by the body.
var opsAdminErrorRE = regexp.MustCompile(`(?s)^caddy responded with error: HTTP (\d+): (.*)$`)

// opsAdminError turns AdminAPIRequest's error into the API's own message.
func opsAdminError(addr string, err error) error {
	m := opsAdminErrorRE.FindStringSubmatch(err.Error())
	if m == nil {
		return fmt.Errorf("admin API at %s: %w", addr, err)
	}
	var answer struct {
		Error string `json:"error"`
	}
	if json.Unmarshal([]byte(m[2]), &answer) == nil && answer.Error != "" {
		return fmt.Errorf("%s (HTTP %s)", answer.Error, m[1])
	}
	return fmt.Errorf("admin API at %s: HTTP %s: %s", addr, m[1], strings.TrimSpace(m[2]))
}

// opsRunAdmin makes a command's RunE: it calls the admin API and either prints
// the JSON answer (--json) or decodes it into a new T and renders it.
func opsRunAdmin[T any](call func(c *cobra.Command, args []string) (opsAdminCall, error), render func(w io.Writer, v *T) error) func(*cobra.Command, []string) error {
	return func(c *cobra.Command, args []string) error {
		ac, err := call(c, args)
		if err != nil {
			return err
		}
		b, err := opsCallAdmin(c, ac)
		if err != nil {
			return err
		}
		out := c.OutOrStdout()
		if asJSON, _ := c.Flags().GetBool("json"); asJSON {
			if len(b) > 0 && !bytes.HasSuffix(b, []byte("\n")) {
				b = append(b, '\n')
			}
			_, err := out.Write(b)
			return err
		}
		v := new(T)
		if err := json.Unmarshal(b, v); err != nil {
			return fmt.Errorf("the admin API's answer is not what this command expects: %w", err)
		}
		return render(out, v)
	}
}

// opsFixed returns a call that does not depend on flags or arguments.
func opsFixed(ac opsAdminCall) func(*cobra.Command, []string) (opsAdminCall, error) {
	return func(*cobra.Command, []string) (opsAdminCall, error) { return ac, nil }
}

func opsNewTable(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
}

// opsRow writes one table row; cells are cleaned of tabs and newlines.
func opsRow(tw io.Writer, cells ...string) {
	for i, c := range cells {
		cells[i] = opsCell(c)
	}
	fmt.Fprintln(tw, strings.Join(cells, "\t"))
}

// opsCell makes a value safe for a table cell; "" becomes "-".
func opsCell(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if s = strings.TrimSpace(s); s == "" {
		return "-"
	}
	return s
}

// opsTruncate shortens s to n runes, ending it with "…" when cut.
func opsTruncate(s string, n int) string {
	r := []rune(opsCell(s))
	if len(r) <= n {
		return string(r)
	}
	return string(r[:n-1]) + "…"
}

// opsHumanBytes writes a size in binary units: 512 B, 1.2 KiB, 3.0 MiB.
func opsHumanBytes(n int64) string {
	if n < 1024 {
		return fmt.Sprintf("%d B", n)
	}
	f := float64(n)
	for _, unit := range []string{"KiB", "MiB", "GiB", "TiB"} {
		f /= 1024
		if f < 1024 || unit == "TiB" {
			return fmt.Sprintf("%.1f %s", f, unit)
		}
	}
	return "" // not reached
}

// opsHumanAge writes an age in seconds like 350ms, 4.2s or 3m2s; 0 is "-".
func opsHumanAge(seconds float64) string {
	if seconds <= 0 {
		return "-"
	}
	d := time.Duration(seconds * float64(time.Second))
	switch {
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Minute:
		return d.Round(100 * time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}

// opsHumanMillis writes a duration in milliseconds like 1.234ms or 2.5s.
func opsHumanMillis(ms float64) string {
	d := time.Duration(ms * float64(time.Millisecond))
	if d < time.Second {
		return d.Round(time.Microsecond).String()
	}
	return d.Round(time.Millisecond).String()
}

func opsTimestamp(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

func opsTimestampMillis(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format("2006-01-02T15:04:05.000Z07:00")
}

func opsStatus(code int) string {
	if code == 0 {
		return "-"
	}
	return strconv.Itoa(code)
}

func opsRouteState(r adminapi.RouteStats) string {
	var s []string
	if r.Paused {
		s = append(s, "paused")
	}
	if r.Disabled != "" {
		s = append(s, "disabled: "+r.Disabled)
	}
	if r.VerifyOnly {
		s = append(s, "verify-only")
	}
	if len(s) == 0 {
		return "ok"
	}
	return strings.Join(s, ", ")
}

func statsCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "stats [--address <addr>] [--json]",
		Short: "Shows every route's queue, dead letters and state",
		Args:  cobra.NoArgs,
		RunE: opsRunAdmin(opsFixed(opsAdminCall{method: http.MethodGet, path: "stats"}), func(w io.Writer, st *adminapi.Stats) error {
			tw := opsNewTable(w)
			opsRow(tw, "ROUTE", "QUEUED", "IN FLIGHT", "SCHEDULED", "DEAD", "BYTES", "OLDEST", "STATE")
			for _, r := range st.Routes {
				opsRow(tw, r.Route, opsItoa(r.Queued), opsItoa(r.InFlight), opsItoa(r.Scheduled), opsItoa(r.Dead),
					opsHumanBytes(r.Bytes), opsHumanAge(r.OldestPendingAge), opsRouteState(r))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if _, err := fmt.Fprintf(w, "\nstorage %s: %d items, %s\n", st.Storage, st.Items, opsHumanBytes(st.Bytes)); err != nil {
				return err
			}
			r := st.Records
			_, err := fmt.Fprintf(w, "records: %s of %s (dedupe: %d, %s; attempts: %d, %s); %d attempt records dropped\n",
				opsHumanBytes(r.Dedupe.Bytes+r.Attempts.Bytes), opsHumanBytes(r.MaxBytes), r.Dedupe.Count, opsHumanBytes(r.Dedupe.Bytes),
				r.Attempts.Count, opsHumanBytes(r.Attempts.Bytes), r.AttemptRecordsDropped)
			return err
		}),
	}
	opsAdminFlags(c)
	return c
}

func opsItoa(n int64) string { return strconv.FormatInt(n, 10) }

func deadListCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "list [--route <route>] [--reason <reason>] [--limit <n>] [--cursor <cursor>]",
		Short: "Lists dead letters, a page at a time",
		Args:  cobra.NoArgs,
	}
	c.RunE = opsRunAdmin(func(c *cobra.Command, _ []string) (opsAdminCall, error) {
		get := func(name string) string { v, _ := c.Flags().GetString(name); return v }
		q := url.Values{"route": {get("route")}, "reason": {get("reason")}, "cursor": {get("cursor")}}
		if limit, _ := c.Flags().GetInt("limit"); limit != 0 {
			q.Set("limit", strconv.Itoa(limit))
		}
		return opsAdminCall{method: http.MethodGet, path: "dead", query: q}, nil
	}, func(w io.Writer, l *adminapi.DeadPage) error {
		if len(l.Dead) == 0 {
			_, err := fmt.Fprintln(w, "no dead letters")
			return err
		}
		tw := opsNewTable(w)
		opsRow(tw, "ID", "ROUTE", "EVENT ID", "REASON", "ATTEMPTS", "LAST STATUS", "LAST ERROR", "DEAD AT")
		for _, d := range l.Dead {
			opsRow(tw, d.ID, d.Route, d.EventID, d.Reason, strconv.Itoa(d.Attempts), opsStatus(d.LastStatus),
				opsTruncate(d.LastError, 40), opsTimestamp(d.DeadAt))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		if l.NextCursor != "" {
			_, err := fmt.Fprintf(w, "\nmore: --cursor %s\n", l.NextCursor)
			return err
		}
		return nil
	})
	opsAdminFlags(c)
	f := c.Flags()
	f.String("route", "", "only this route's dead letters")
	f.String("reason", "", "only dead letters with this reason (max_attempts, subscriber_gone, ...)")
	f.Int("limit", 0, "at most this many (1 to 1000; the API's default is 100)")
	f.String("cursor", "", "continue after a previous page (its next cursor)")
	return c
}

func deadReplayCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "replay (--id <id> ... | --route <route> [--reason <reason>] | --reason <reason> | --all)",
		Short: "Queues dead letters for delivery again",
		Args:  cobra.NoArgs,
	}
	c.RunE = opsRunAdmin(func(c *cobra.Command, _ []string) (opsAdminCall, error) {
		ids, _ := c.Flags().GetStringSlice("id")
		route, _ := c.Flags().GetString("route")
		reason, _ := c.Flags().GetString("reason")
		all, _ := c.Flags().GetBool("all")
		filtered := route != "" || reason != ""
		chosen := 0
		for _, b := range []bool{len(ids) > 0, filtered, all} {
			if b {
				chosen++
			}
		}
		if chosen != 1 {
			return opsAdminCall{}, errors.New("give --id (once or more), or --route and/or --reason, or --all")
		}
		return opsAdminCall{method: http.MethodPost, path: "dead/replay",
			body: adminapi.ReplayRequest{IDs: ids, Route: route, Reason: reason, All: all}}, nil
	}, func(w io.Writer, r *adminapi.Replayed) error {
		_, err := fmt.Fprintf(w, "replayed %d\n", r.Replayed)
		return err
	})
	opsAdminFlags(c)
	f := c.Flags()
	f.StringSlice("id", nil, "a dead letter's id (repeat it, or separate ids with commas)")
	f.String("route", "", "every dead letter of this route")
	f.String("reason", "", "every dead letter with this reason (with --route: of that route)")
	f.Bool("all", false, "every dead letter")
	return c
}

func deadDeleteCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "delete <id>",
		Short: "Deletes a dead letter for good",
		Args:  cobra.ExactArgs(1),
	}
	c.RunE = opsRunAdmin(func(_ *cobra.Command, args []string) (opsAdminCall, error) {
		return opsAdminCall{method: http.MethodDelete, path: "dead/" + url.PathEscape(args[0])}, nil
	}, func(w io.Writer, r *adminapi.Deleted) error {
		_, err := fmt.Fprintf(w, "deleted %d\n", r.Deleted)
		return err
	})
	opsAdminFlags(c)
	return c
}

func eventsCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "events <eventId> [--route <route>]",
		Short: "Shows an event's state and delivery attempts on each route",
		Args:  cobra.ExactArgs(1),
	}
	c.RunE = opsRunAdmin(func(c *cobra.Command, args []string) (opsAdminCall, error) {
		route, _ := c.Flags().GetString("route")
		return opsAdminCall{method: http.MethodGet, path: "events/" + url.PathEscape(args[0]),
			query: url.Values{"route": {route}}}, nil
	}, func(w io.Writer, ev *adminapi.Event) error {
		for i, r := range ev.Routes {
			if i > 0 {
				fmt.Fprintln(w)
			}
			fmt.Fprintf(w, "event %s on route %s: %s", ev.EventID, r.Route, r.State)
			if r.Dead != nil {
				fmt.Fprintf(w, " (dead letter %s: %s since %s)", r.Dead.ID, r.Dead.Reason, opsTimestamp(r.Dead.DeadAt))
			}
			fmt.Fprintln(w)
			if len(r.Attempts) == 0 {
				fmt.Fprintln(w, "no attempts yet")
				continue
			}
			tw := opsNewTable(w)
			opsRow(tw, "ATTEMPT", "AT", "DURATION", "STATUS", "ERROR")
			for _, a := range r.Attempts {
				opsRow(tw, strconv.Itoa(a.Attempt), opsTimestampMillis(a.At), opsHumanMillis(a.DurationMs), opsStatus(a.Status), a.Error)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
		}
		return nil
	})
	opsAdminFlags(c)
	c.Flags().String("route", "", "only this route")
	return c
}

// routeStateCommand is `pause` or `resume`.
func routeStateCommand(verb string) *cobra.Command {
	short := map[string]string{
		"pause":  "Pauses a route's deliveries (events are still accepted and queued)",
		"resume": "Resumes a paused route's deliveries",
	}[verb]
	c := &cobra.Command{
		Use:   verb + " <route>",
		Short: short,
		Args:  cobra.ExactArgs(1),
	}
	c.RunE = opsRunAdmin(func(_ *cobra.Command, args []string) (opsAdminCall, error) {
		return opsAdminCall{method: http.MethodPost, path: "routes/" + url.PathEscape(args[0]) + "/" + verb}, nil
	}, func(w io.Writer, r *adminapi.RoutePaused) error {
		state := "resumed"
		if r.Paused {
			state = "paused"
		}
		_, err := fmt.Fprintf(w, "route %s %s\n", r.Route, state)
		return err
	})
	opsAdminFlags(c)
	return c
}

func enableCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "enable <subscriber>",
		Short: "Enables a subscriber disabled by a 410 and replays what waited for it",
		Args:  cobra.ExactArgs(1),
	}
	c.RunE = opsRunAdmin(func(_ *cobra.Command, args []string) (opsAdminCall, error) {
		return opsAdminCall{method: http.MethodPost, path: "subscribers/" + url.PathEscape(args[0]) + "/enable"}, nil
	}, func(w io.Writer, r *adminapi.SubscriberEnabled) error {
		_, err := fmt.Fprintf(w, "subscriber %s enabled; replayed %d\n", r.Subscriber, r.Replayed)
		return err
	})
	opsAdminFlags(c)
	return c
}
