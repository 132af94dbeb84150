package caddymodule

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/hookgate/hookgate/adminapi"
	"github.com/hookgate/hookgate/spool"
)

func init() {
	caddy.RegisterModule(AdminAPI{})
}

// AdminAPI serves /webhooks/ on Caddy's admin endpoint: statistics, dead
// letters, an event's status and attempts, pausing routes and enabling
// subscribers. It is loaded with every configuration. Its requests and
// answers are the types of package adminapi.
type AdminAPI struct {
	log *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (AdminAPI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.webhooks",
		New: func() caddy.Module { return new(AdminAPI) },
	}
}

// Provision sets up the logger.
func (a *AdminAPI) Provision(ctx caddy.Context) error {
	a.log = ctx.Logger()
	return nil
}

// Routes returns the admin routes.
func (a *AdminAPI) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{{Pattern: "/webhooks/", Handler: caddy.AdminHandlerFunc(a.serve)}}
}

func (a *AdminAPI) serve(w http.ResponseWriter, r *http.Request) error {
	path := strings.Trim(strings.TrimPrefix(r.URL.Path, "/webhooks"), "/")
	parts := strings.Split(path, "/")
	s, err := a.store(r)
	if err != nil {
		return err
	}
	switch {
	case path == "stats":
		return a.only(r, http.MethodGet, func() error { return a.stats(w, s) })
	case path == "dead":
		return a.only(r, http.MethodGet, func() error { return a.listDead(w, r, s) })
	case path == "dead/replay":
		return a.only(r, http.MethodPost, func() error { return a.replay(w, r, s) })
	case len(parts) == 2 && parts[0] == "dead":
		return a.only(r, http.MethodDelete, func() error { return a.deleteDead(w, r, s, parts[1]) })
	case len(parts) == 2 && parts[0] == "events":
		return a.only(r, http.MethodGet, func() error { return a.event(w, r, s, parts[1]) })
	case len(parts) >= 3 && parts[0] == "routes" && (parts[len(parts)-1] == "pause" || parts[len(parts)-1] == "resume"):
		// Route names may hold a slash (subscriber/acme).
		name := strings.Join(parts[1:len(parts)-1], "/")
		return a.only(r, http.MethodPost, func() error { return a.pause(w, r, s, name, parts[len(parts)-1] == "pause") })
	case len(parts) == 3 && parts[0] == "subscribers" && parts[2] == "enable":
		return a.only(r, http.MethodPost, func() error { return a.enable(w, r, s, parts[1]) })
	}
	return apiError(http.StatusNotFound, "no such endpoint: %s", r.URL.Path)
}

func (a *AdminAPI) only(r *http.Request, method string, f func() error) error {
	if r.Method != method {
		return apiError(http.StatusMethodNotAllowed, "use %s", method)
	}
	return f()
}

// store finds the open store: the one of the running configuration, or the
// one named by ?storage= when several are open.
func (a *AdminAPI) store(r *http.Request) (spool.Backend, error) {
	want := r.URL.Query().Get("storage")
	var found []spool.Backend
	stores.Range(func(_, v any) bool {
		if h, ok := v.(storeHandle); ok && (want == "" || storageIs(h.Name(), want)) {
			found = append(found, h.Backend)
		}
		return true
	})
	switch {
	case len(found) == 1:
		return found[0], nil
	case len(found) == 0 && want != "":
		return nil, apiError(http.StatusNotFound, "no open storage %s", want)
	case len(found) == 0:
		return nil, apiError(http.StatusNotFound, "no webhooks storage is open: the configuration has no webhook routes")
	}
	return nil, apiError(http.StatusBadRequest, "several storages are open; choose one with ?storage=<name>")
}

// storageIs reports whether a store's name is what ?storage= asks for: the
// name, or the name without its backend's prefix ("badger:/srv/spool" is
// also "/srv/spool", the directory that older clients give).
func storageIs(name, want string) bool {
	_, bare, _ := strings.Cut(name, ":")
	return want == name || want == bare
}

func toRecordStats(u spool.RecordUsage) adminapi.RecordStats {
	return adminapi.RecordStats{
		Dedupe:   adminapi.RecordCount{Count: u.Dedupe.Count, Bytes: u.Dedupe.Bytes},
		Attempts: adminapi.RecordCount{Count: u.Attempts.Count, Bytes: u.Attempts.Bytes},
		MaxBytes: u.MaxBytes, AttemptRecordsDropped: u.AttemptRecordsDropped,
	}
}

func (a *AdminAPI) stats(w http.ResponseWriter, s spool.Backend) error {
	now := time.Now()
	out := adminapi.Stats{Storage: s.Name(), Records: toRecordStats(s.Records()), Routes: []adminapi.RouteStats{}}
	out.Items, out.Bytes = s.Usage()
	for _, rs := range routeStats(s) {
		sub, _ := strings.CutPrefix(rs.Route, "subscriber/")
		if sub == rs.Route {
			sub = ""
		}
		out.Routes = append(out.Routes, adminapi.RouteStats{
			Route: rs.Route, Subscriber: sub, Queued: rs.Queued, InFlight: rs.InFlight, Scheduled: rs.Scheduled,
			Dead: rs.Dead, Bytes: rs.Bytes, OldestPendingAge: rs.OldestAge(now).Seconds(), Paused: rs.Paused, Disabled: rs.Disabled,
			VerifyOnly: verifyOnly.has(s.Name(), rs.Route),
		})
	}
	for _, name := range verifyOnly.list(s.Name()) {
		if !slices.ContainsFunc(out.Routes, func(r adminapi.RouteStats) bool { return r.Route == name }) {
			out.Routes = append(out.Routes, adminapi.RouteStats{Route: name, VerifyOnly: true})
		}
	}
	slices.SortFunc(out.Routes, func(a, b adminapi.RouteStats) int { return strings.Compare(a.Route, b.Route) })
	return writeJSON(w, http.StatusOK, out)
}

func toDeadLetter(d spool.DeadLetter) adminapi.DeadLetter {
	return adminapi.DeadLetter{ID: strconv.FormatUint(d.ID, 10), Route: d.Route, EventID: d.EventID, Reason: d.Reason, Attempts: d.Attempts,
		LastStatus: d.LastStatus, LastError: d.LastError, Bytes: d.Size, ReceivedAt: d.ReceivedAt, DeadAt: d.DeadAt}
}

func (a *AdminAPI) listDead(w http.ResponseWriter, r *http.Request, s spool.Backend) error {
	q := r.URL.Query()
	limit := 100
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			return apiError(http.StatusBadRequest, "limit must be 1 to 1000")
		}
		limit = n
	}
	var after uint64
	if v := q.Get("cursor"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return apiError(http.StatusBadRequest, "bad cursor %q", v)
		}
		after = n
	}
	items, next, err := s.ListDead(r.Context(), spool.DeadFilter{Route: q.Get("route"), Reason: q.Get("reason")}, after, limit)
	if err != nil {
		return apiError(http.StatusInternalServerError, "listing dead letters: %v", err)
	}
	out := adminapi.DeadPage{Dead: []adminapi.DeadLetter{}}
	for _, d := range items {
		out.Dead = append(out.Dead, toDeadLetter(d))
	}
	if next != 0 {
		out.NextCursor = strconv.FormatUint(next, 10)
	}
	return writeJSON(w, http.StatusOK, out)
}

func (a *AdminAPI) replay(w http.ResponseWriter, r *http.Request, s spool.Backend) error {
	var req adminapi.ReplayRequest
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	filtered := req.Route != "" || req.Reason != ""
	if (len(req.IDs) > 0) == (filtered || req.All) || (filtered && req.All) {
		return apiError(http.StatusBadRequest, `give "ids", or a "route"/"reason" filter, or "all": true`)
	}
	var n int
	var err error
	if len(req.IDs) > 0 {
		ids, perr := parseIDs(req.IDs)
		if perr != nil {
			return perr
		}
		n, err = s.Replay(r.Context(), ids...)
	} else {
		n, err = s.ReplayMatching(r.Context(), spool.DeadFilter{Route: req.Route, Reason: req.Reason})
	}
	if err != nil {
		return apiError(http.StatusInternalServerError, "replaying: %v", err)
	}
	a.changed(r, "dead letters replayed", zap.Int("count", n), zap.Strings("ids", req.IDs),
		zap.String("route", req.Route), zap.String("reason", req.Reason), zap.Bool("all", req.All))
	return writeJSON(w, http.StatusOK, adminapi.Replayed{Replayed: n})
}

func (a *AdminAPI) deleteDead(w http.ResponseWriter, r *http.Request, s spool.Backend, rawID string) error {
	ids, err := parseIDs([]string{rawID})
	if err != nil {
		return err
	}
	n, err := s.DeleteDead(r.Context(), ids...)
	if err != nil {
		return apiError(http.StatusInternalServerError, "deleting: %v", err)
	}
	if n == 0 {
		return apiError(http.StatusNotFound, "no dead letter %s", rawID)
	}
	a.changed(r, "dead letter deleted", zap.String("id", rawID))
	return writeJSON(w, http.StatusOK, adminapi.Deleted{Deleted: n})
}

func (a *AdminAPI) event(w http.ResponseWriter, r *http.Request, s spool.Backend, eventID string) error {
	routes := []string{}
	if rt := r.URL.Query().Get("route"); rt != "" {
		routes = append(routes, rt)
	} else {
		for _, rs := range routeStats(s) {
			routes = append(routes, rs.Route)
		}
		for _, name := range verifyOnly.list(s.Name()) {
			if !slices.Contains(routes, name) {
				routes = append(routes, name)
			}
		}
	}
	out := adminapi.Event{EventID: eventID, Routes: []adminapi.EventRoute{}}
	for _, rt := range routes {
		st, err := s.Lookup(r.Context(), rt, eventID)
		if errors.Is(err, spool.ErrNotFound) {
			continue
		}
		if err != nil {
			return apiError(http.StatusInternalServerError, "looking up: %v", err)
		}
		es := adminapi.EventRoute{Route: rt, State: adminapi.EventState(st.State), Attempts: []adminapi.Attempt{}}
		if st.ID != 0 {
			es.ID = strconv.FormatUint(st.ID, 10)
		}
		if st.Dead != nil {
			d := toDeadLetter(*st.Dead)
			es.Dead = &d
		}
		for _, at := range st.Attempts {
			es.Attempts = append(es.Attempts, adminapi.Attempt{Attempt: at.Number, At: at.At,
				DurationMs: float64(at.Duration.Microseconds()) / 1000, Status: at.StatusCode, Error: at.Error})
		}
		out.Routes = append(out.Routes, es)
	}
	if len(out.Routes) == 0 {
		return apiError(http.StatusNotFound, "no route knows event %s (or its dedupe window has passed)", eventID)
	}
	return writeJSON(w, http.StatusOK, out)
}

func (a *AdminAPI) pause(w http.ResponseWriter, r *http.Request, s spool.Backend, route string, pause bool) error {
	if !knownRoute(s, route) {
		return apiError(http.StatusNotFound, "no route %s", route)
	}
	var err error
	if pause {
		err = s.Pause(r.Context(), route)
	} else {
		err = s.Resume(r.Context(), route)
	}
	if err != nil {
		return apiError(http.StatusInternalServerError, "%v", err)
	}
	a.changed(r, map[bool]string{true: "route paused", false: "route resumed"}[pause], zap.String("route", route))
	return writeJSON(w, http.StatusOK, adminapi.RoutePaused{Route: route, Paused: pause})
}

func (a *AdminAPI) enable(w http.ResponseWriter, r *http.Request, s spool.Backend, name string) error {
	route := subscriberRoute(name)
	if !knownRoute(s, route) {
		return apiError(http.StatusNotFound, "no subscriber %s", name)
	}
	if err := s.Enable(r.Context(), route); err != nil {
		return apiError(http.StatusInternalServerError, "%v", err)
	}
	// The deliveries that waited as dead letters while it was disabled go out now.
	n, err := s.ReplayMatching(r.Context(), spool.DeadFilter{Route: route, Reason: ReasonGone})
	if err != nil {
		return apiError(http.StatusInternalServerError, "replaying: %v", err)
	}
	a.changed(r, "subscriber enabled", zap.String("subscriber", name), zap.Int("replayed", n))
	return writeJSON(w, http.StatusOK, adminapi.SubscriberEnabled{Subscriber: name, Enabled: true, Replayed: n})
}

// changed logs a state change with who asked.
func (a *AdminAPI) changed(r *http.Request, msg string, fields ...zap.Field) {
	a.log.Info(msg, append(fields, zap.String("remote_addr", r.RemoteAddr))...)
}

func knownRoute(s spool.Backend, route string) bool {
	for _, rs := range routeStats(s) {
		if rs.Route == route {
			return true
		}
	}
	return false
}

func parseIDs(raw []string) ([]uint64, error) {
	ids := make([]uint64, 0, len(raw))
	for _, v := range raw {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil || n == 0 {
			return nil, apiError(http.StatusBadRequest, "bad id %q", v)
		}
		ids = append(ids, n)
	}
	return ids, nil
}

func decodeBody(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return apiError(http.StatusBadRequest, "bad request body: %v", err)
	}
	return nil
}

func apiError(code int, format string, a ...any) error {
	err := fmt.Errorf(format, a...)
	return caddy.APIError{HTTPStatus: code, Err: err, Message: err.Error()}
}

// Interface guards.
var (
	_ caddy.AdminRouter = (*AdminAPI)(nil)
	_ caddy.Provisioner = (*AdminAPI)(nil)
)
