// Package webhookcli holds the subcommands of `caddy webhook`. The test
// sender's, sign, verify and send (sender.go), try a webhook_ingest route by
// hand. The operator's, stats, dead list|replay|delete, events, pause,
// resume and enable, call the running instance's admin API (/webhooks/ on
// Caddy's admin endpoint, whose requests and answers are package
// adminapi's) and print tables, or the API's JSON with --json. caddymodule
// registers them with caddycmd.
package webhookcli

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/hookgate/hookgate/adminapi"
)

// Commands returns the subcommands of `caddy webhook`: the test sender's
// (sender.go) and the operator's.
func Commands() []*cobra.Command {
	dead := &cobra.Command{
		Use:   "dead list|replay|delete",
		Short: "Lists, replays and deletes dead letters",
	}
	dead.AddCommand(deadListCommand(), deadReplayCommand(), deadDeleteCommand())
	return []*cobra.Command{
		signCommand(), verifyCommand(), sendCommand(),
		statsCommand(), dead, eventsCommand(),
		routeStateCommand("pause"), routeStateCommand("resume"), enableCommand(),
	}
}

// addAdminFlags adds the flags every operator command has.
func addAdminFlags(c *cobra.Command) {
	f := c.Flags()
	f.Bool("json", false, "print the admin API's JSON answer as it is")
	f.String("address", "", "the admin API's address, if not the default (or the one in --config)")
	f.StringP("config", "c", "", "a configuration file to read the admin address from, if --address is not used")
	f.StringP("adapter", "a", "", "the config adapter of --config")
	f.String("storage", "", "the storage (its name in the stats, or a Badger directory), when the instance has several open")
	f.Duration("timeout", defaultAdminTimeout, "how long to wait for the admin API's answer")
}

// runAdmin makes a command's RunE: it calls the admin API and either prints
// the JSON answer (--json) or decodes it into a new T and renders it.
func runAdmin[T any](call func(c *cobra.Command, args []string) (request, error), render func(w io.Writer, v *T) error) func(*cobra.Command, []string) error {
	return func(c *cobra.Command, args []string) error {
		req, err := call(c, args)
		if err != nil {
			return err
		}
		cl, err := newClient(c)
		if err != nil {
			return err
		}
		b, err := cl.call(req)
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

// fixed returns a call that does not depend on flags or arguments.
func fixed(req request) func(*cobra.Command, []string) (request, error) {
	return func(*cobra.Command, []string) (request, error) { return req, nil }
}

func routeState(r adminapi.RouteStats) string {
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
		RunE: runAdmin(fixed(request{method: http.MethodGet, path: "stats"}), func(w io.Writer, st *adminapi.Stats) error {
			tw := newTable(w)
			row(tw, "ROUTE", "QUEUED", "IN FLIGHT", "SCHEDULED", "DEAD", "BYTES", "OLDEST", "STATE")
			for _, r := range st.Routes {
				row(tw, r.Route, itoa(r.Queued), itoa(r.InFlight), itoa(r.Scheduled), itoa(r.Dead),
					humanBytes(r.Bytes), humanAge(r.OldestPendingAge), routeState(r))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if _, err := fmt.Fprintf(w, "\nstorage %s: %d items, %s\n", st.Storage, st.Items, humanBytes(st.Bytes)); err != nil {
				return err
			}
			r := st.Records
			_, err := fmt.Fprintf(w, "records: %s of %s (dedupe: %d, %s; attempts: %d, %s); %d attempt records dropped\n",
				humanBytes(r.Dedupe.Bytes+r.Attempts.Bytes), humanBytes(r.MaxBytes), r.Dedupe.Count, humanBytes(r.Dedupe.Bytes),
				r.Attempts.Count, humanBytes(r.Attempts.Bytes), r.AttemptRecordsDropped)
			return err
		}),
	}
	addAdminFlags(c)
	return c
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func deadListCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "list [--route <route>] [--reason <reason>] [--limit <n>] [--cursor <cursor>]",
		Short: "Lists dead letters, a page at a time",
		Args:  cobra.NoArgs,
	}
	c.RunE = runAdmin(func(c *cobra.Command, _ []string) (request, error) {
		get := func(name string) string { v, _ := c.Flags().GetString(name); return v }
		q := url.Values{"route": {get("route")}, "reason": {get("reason")}, "cursor": {get("cursor")}}
		if limit, _ := c.Flags().GetInt("limit"); limit != 0 {
			q.Set("limit", strconv.Itoa(limit))
		}
		return request{method: http.MethodGet, path: "dead", query: q}, nil
	}, func(w io.Writer, l *adminapi.DeadPage) error {
		if len(l.Dead) == 0 {
			_, err := fmt.Fprintln(w, "no dead letters")
			return err
		}
		tw := newTable(w)
		row(tw, "ID", "ROUTE", "EVENT ID", "REASON", "ATTEMPTS", "LAST STATUS", "LAST ERROR", "DEAD AT")
		for _, d := range l.Dead {
			row(tw, d.ID, d.Route, d.EventID, d.Reason, strconv.Itoa(d.Attempts), status(d.LastStatus),
				truncate(d.LastError, 40), timestamp(d.DeadAt))
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
	addAdminFlags(c)
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
	c.RunE = runAdmin(func(c *cobra.Command, _ []string) (request, error) {
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
			return request{}, errors.New("give --id (once or more), or --route and/or --reason, or --all")
		}
		return request{method: http.MethodPost, path: "dead/replay",
			body: adminapi.ReplayRequest{IDs: ids, Route: route, Reason: reason, All: all}}, nil
	}, func(w io.Writer, r *adminapi.Replayed) error {
		_, err := fmt.Fprintf(w, "replayed %d\n", r.Replayed)
		return err
	})
	addAdminFlags(c)
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
	c.RunE = runAdmin(func(_ *cobra.Command, args []string) (request, error) {
		return request{method: http.MethodDelete, path: "dead/" + url.PathEscape(args[0])}, nil
	}, func(w io.Writer, r *adminapi.Deleted) error {
		_, err := fmt.Fprintf(w, "deleted %d\n", r.Deleted)
		return err
	})
	addAdminFlags(c)
	return c
}

func eventsCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "events <eventId> [--route <route>]",
		Short: "Shows an event's state and delivery attempts on each route",
		Args:  cobra.ExactArgs(1),
	}
	c.RunE = runAdmin(func(c *cobra.Command, args []string) (request, error) {
		route, _ := c.Flags().GetString("route")
		return request{method: http.MethodGet, path: "events/" + url.PathEscape(args[0]),
			query: url.Values{"route": {route}}}, nil
	}, func(w io.Writer, ev *adminapi.Event) error {
		for i, r := range ev.Routes {
			if i > 0 {
				fmt.Fprintln(w)
			}
			fmt.Fprintf(w, "event %s on route %s: %s", ev.EventID, r.Route, r.State)
			if r.Dead != nil {
				fmt.Fprintf(w, " (dead letter %s: %s since %s)", r.Dead.ID, r.Dead.Reason, timestamp(r.Dead.DeadAt))
			}
			fmt.Fprintln(w)
			if len(r.Attempts) == 0 {
				fmt.Fprintln(w, "no attempts yet")
				continue
			}
			tw := newTable(w)
			row(tw, "ATTEMPT", "AT", "DURATION", "STATUS", "ERROR")
			for _, a := range r.Attempts {
				row(tw, strconv.Itoa(a.Attempt), timestampMillis(a.At), humanMillis(a.DurationMs), status(a.Status), a.Error)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
		}
		return nil
	})
	addAdminFlags(c)
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
	c.RunE = runAdmin(func(_ *cobra.Command, args []string) (request, error) {
		return request{method: http.MethodPost, path: "routes/" + url.PathEscape(args[0]) + "/" + verb}, nil
	}, func(w io.Writer, r *adminapi.RoutePaused) error {
		state := "resumed"
		if r.Paused {
			state = "paused"
		}
		_, err := fmt.Fprintf(w, "route %s %s\n", r.Route, state)
		return err
	})
	addAdminFlags(c)
	return c
}

func enableCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "enable <subscriber>",
		Short: "Enables a subscriber disabled by a 410 and replays what waited for it",
		Args:  cobra.ExactArgs(1),
	}
	c.RunE = runAdmin(func(_ *cobra.Command, args []string) (request, error) {
		return request{method: http.MethodPost, path: "subscribers/" + url.PathEscape(args[0]) + "/enable"}, nil
	}, func(w io.Writer, r *adminapi.SubscriberEnabled) error {
		_, err := fmt.Fprintf(w, "subscriber %s enabled; replayed %d\n", r.Subscriber, r.Replayed)
		return err
	})
	addAdminFlags(c)
	return c
}
