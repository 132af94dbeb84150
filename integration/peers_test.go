package integration

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hookgate/hookgate/internal/testwait"
	"github.com/hookgate/hookgate/verifier"
)

// recorded is one request an upstream received.
type recorded struct {
	Method  string
	Path    string
	Header  http.Header
	Body    []byte
	ID      string // X-Webhook-Id
	Attempt string // X-Webhook-Attempt
	At      time.Time
	// Status is what the upstream answered; Completed is set once the answer
	// was written in full (a slow answer can be cut short by the gateway).
	Status    int
	Completed bool
	// Ended is when the upstream was done with the request: answered, or
	// the gateway gave up on it.
	Ended time.Time
}

// reply is an upstream's answer to a request: status, an optional delay
// before answering, a body and extra headers.
type reply struct {
	Status int
	Delay  time.Duration
	Body   string
	Header http.Header
}

// upstream is a real HTTP server on loopback that records every request.
type upstream struct {
	t    testing.TB
	addr string
	srv  *http.Server

	mu      sync.Mutex
	reqs    []*recorded
	respond func(*recorded) reply
	arrived chan *recorded // optional: every arrival is offered here without blocking
	conns   map[net.Conn]http.ConnState
}

// newUpstream starts an upstream on a free loopback port that answers 200.
func newUpstream(t testing.TB) *upstream {
	return newUpstreamAt(t, freePort(t))
}

// newUpstreamAt starts an upstream on the given loopback port.
func newUpstreamAt(t testing.TB, port int) *upstream {
	t.Helper()
	u := &upstream{t: t, addr: fmt.Sprintf("127.0.0.1:%d", port), conns: map[net.Conn]http.ConnState{}}
	var ln net.Listener
	var err error
	for i := 0; i < 50; i++ { // the port may be in TIME_WAIT or briefly reused
		if ln, err = net.Listen("tcp", u.addr); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("upstream listen on %s: %v", u.addr, err)
	}
	u.srv = &http.Server{Handler: u, ReadHeaderTimeout: 10 * time.Second, ConnState: u.connState}
	go u.srv.Serve(ln)
	t.Cleanup(u.close)
	return u
}

func (u *upstream) close() { u.srv.Close() }

func (u *upstream) connState(c net.Conn, st http.ConnState) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if st == http.StateClosed || st == http.StateHijacked {
		delete(u.conns, c)
	} else {
		u.conns[c] = st
	}
}

// openConns is the number of connections the upstream has open (the
// gateway's keep-alive connections).
func (u *upstream) openConns() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.conns)
}

func (u *upstream) url(path string) string { return "http://" + u.addr + path }

// setRespond sets how the upstream answers (nil: 200 at once).
func (u *upstream) setRespond(f func(*recorded) reply) {
	u.mu.Lock()
	u.respond = f
	u.mu.Unlock()
}

// notify offers every later arrival on ch, without blocking.
func (u *upstream) notify(ch chan *recorded) {
	u.mu.Lock()
	u.arrived = ch
	u.mu.Unlock()
}

func (u *upstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, "read error", http.StatusBadRequest)
		return
	}
	rec := &recorded{
		Method: r.Method, Path: r.URL.Path, Header: r.Header.Clone(), Body: body,
		ID: r.Header.Get("X-Webhook-Id"), Attempt: r.Header.Get("X-Webhook-Attempt"), At: time.Now(),
	}
	u.mu.Lock()
	u.reqs = append(u.reqs, rec)
	respond, arrived := u.respond, u.arrived
	u.mu.Unlock()
	if arrived != nil {
		select {
		case arrived <- rec:
		default:
		}
	}
	rp := reply{Status: http.StatusOK, Body: "ok"}
	if respond != nil {
		rp = respond(rec)
	}
	if !sleepCtx(r.Context(), rp.Delay) {
		u.mu.Lock()
		rec.Ended = time.Now()
		u.mu.Unlock()
		return // the gateway gave up on this attempt
	}
	for k, vs := range rp.Header {
		w.Header()[k] = vs
	}
	w.WriteHeader(rp.Status)
	_, err = io.WriteString(w, rp.Body)
	if f, ok := w.(http.Flusher); ok && err == nil {
		f.Flush()
	}
	u.mu.Lock()
	rec.Status = rp.Status
	rec.Completed = err == nil && r.Context().Err() == nil
	rec.Ended = time.Now()
	u.mu.Unlock()
}

// requests returns a snapshot of everything received.
func (u *upstream) requests() []recorded {
	u.mu.Lock()
	defer u.mu.Unlock()
	out := make([]recorded, len(u.reqs))
	for i, r := range u.reqs {
		out[i] = *r
	}
	return out
}

func (u *upstream) count() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.reqs)
}

// byID groups the requests received by X-Webhook-Id.
func (u *upstream) byID() map[string][]recorded {
	out := map[string][]recorded{}
	for _, r := range u.requests() {
		out[r.ID] = append(out[r.ID], r)
	}
	return out
}

// delivered returns the ids the upstream answered 2xx in full.
func (u *upstream) delivered() map[string]int {
	out := map[string]int{}
	for _, r := range u.requests() {
		if r.Completed && r.Status >= 200 && r.Status < 300 {
			out[r.ID]++
		}
	}
	return out
}

// missing lists the ids none of ups has delivered.
func missing(ids []string, ups ...*upstream) []string {
	got := map[string]bool{}
	for _, u := range ups {
		for id := range u.delivered() {
			got[id] = true
		}
	}
	var out []string
	for _, id := range ids {
		if !got[id] {
			out = append(out, id)
		}
	}
	sort.Strings(out)
	return out
}

// waitDelivered waits until every id was delivered to one of ups.
func waitDelivered(t testing.TB, timeout time.Duration, ids []string, ups ...*upstream) {
	t.Helper()
	testwait.Until(t, timeout, func() (bool, string) {
		m := missing(ids, ups...)
		if len(m) == 0 {
			return true, ""
		}
		return false, fmt.Sprintf("%d of %d events not delivered, e.g. %v", len(m), len(ids), m[:min(5, len(m))])
	})
}

// delivery is one inbound webhook request as a sender makes it.
type delivery struct {
	ID     string
	Type   string
	Method string
	Path   string
	Body   []byte
	Header http.Header
	// NoLength sends the body chunked, without Content-Length.
	NoLength bool
}

// head is d's request line and headers as they go on the wire, with its
// Content-Length and extra header lines ("Name: value").
func (d *delivery) head(host string, extra ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n", d.Method, d.Path, host, len(d.Body))
	for _, h := range extra {
		b.WriteString(h + "\r\n")
	}
	for k, vs := range d.Header {
		for _, v := range vs {
			fmt.Fprintf(&b, "%s: %s\r\n", k, v)
		}
	}
	b.WriteString("\r\n")
	return b.String()
}

// answer is the gateway's answer to a delivery.
type answer struct {
	Code    int
	Body    string
	Header  http.Header
	Status  string // the "status" member of a JSON answer
	EventID string // its "eventId"
}

func (a answer) String() string {
	return fmt.Sprintf("%d %s", a.Code, strings.TrimSpace(a.Body))
}

// sender makes fresh signed deliveries with unique eventIds and posts them.
type sender struct {
	g      *gateway
	path   string
	prefix string
	client *http.Client
	seq    atomic.Int64

	mu     sync.RWMutex // held for reading while a delivery is signed and sent
	secret []byte
}

// newSender makes a sender that posts to path on g, signing with secret.
// Every signature it makes is recorded so that the logs can be checked for it.
func newSender(g *gateway, path string, secret []byte) *sender {
	var rnd [4]byte
	rand.Read(rnd[:])
	tr := &http.Transport{MaxIdleConnsPerHost: 128, IdleConnTimeout: 30 * time.Second, DisableCompression: true}
	s := &sender{
		g:      g,
		path:   path,
		prefix: "evt_" + hex.EncodeToString(rnd[:]),
		client: &http.Client{Transport: tr, Timeout: 15 * time.Second},
		secret: secret,
	}
	g.t.Cleanup(tr.CloseIdleConnections)
	return s
}

// setSecret switches the signing secret once no delivery is in flight.
func (s *sender) setSecret(secret []byte) {
	s.mu.Lock()
	s.secret = secret
	s.mu.Unlock()
}

// nextID returns a new unique eventId.
func (s *sender) nextID() string {
	return fmt.Sprintf("%s_%05d", s.prefix, s.seq.Add(1))
}

// envelope is a sender-shaped body. It is deliberately not what
// encoding/json would produce (spacing, key order, "2.50", raw non-ASCII), so
// that any re-serialization shows.
func envelope(id, typ string, ts time.Time, extra string) []byte {
	return fmt.Appendf(nil, `{"eventType":%q, "eventId":%q,"timestamp":%q,`+
		`"organizationId":"org_it","projectId":"proj_it","payload": {"note":"héllo – ünïcode ✓","amount":2.50,  "list":[1,"x",null]%s}}`,
		typ, id, ts.UTC().Format(time.RFC3339Nano), extra)
}

// event returns a valid delivery of type typ with a fresh eventId, signed
// with the current secret.
func (s *sender) event(typ string) *delivery {
	id := s.nextID()
	return s.eventWithID(id, typ)
}

// eventWithID returns a valid, signed delivery for id.
func (s *sender) eventWithID(id, typ string) *delivery {
	d := &delivery{ID: id, Type: typ, Method: http.MethodPost, Path: s.path, Body: envelope(id, typ, time.Now(), "")}
	d.Header = http.Header{}
	d.Header.Set("Content-Type", "application/json")
	d.Header.Set(verifier.EventHeader, typ)
	s.sign(d)
	return d
}

// sign (re)computes the delivery's signature over its body.
func (s *sender) sign(d *delivery) {
	s.mu.RLock()
	secret := s.secret
	s.mu.RUnlock()
	s.signWith(d, secret)
}

func (s *sender) signWith(d *delivery, secret []byte) {
	sig := verifier.Sign(secret, d.Body)
	s.g.sentSignature(sig)
	d.Header.Set(verifier.SignatureHeader, sig)
}

// post sends a delivery as it is.
func (s *sender) post(d *delivery) (answer, error) {
	var body io.Reader = bytes.NewReader(d.Body)
	if d.NoLength {
		body = io.MultiReader(bytes.NewReader(d.Body)) // hides the length: sent chunked
	}
	req, err := http.NewRequest(d.Method, s.g.url(d.Path), body)
	if err != nil {
		return answer{}, err
	}
	for k, vs := range d.Header {
		req.Header[k] = append([]string(nil), vs...)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	a := answer{Code: resp.StatusCode, Body: string(b), Header: resp.Header}
	var js struct {
		Status  string `json:"status"`
		EventID string `json:"eventId"`
	}
	if json.Unmarshal(b, &js) == nil {
		a.Status, a.EventID = js.Status, js.EventID
	}
	return a, nil
}

// mustPost posts and fails the test on a transport error.
func (s *sender) mustPost(t testing.TB, d *delivery) answer {
	t.Helper()
	a, err := s.post(d)
	if err != nil {
		t.Fatalf("posting %s: %v", d.ID, err)
	}
	return a
}

// mustPostAfterReload is mustPost for the moments after a reload, when the
// old server may still close a connection it has just accepted: a
// transport error is retried a few times, as a sender would (a retry of a
// delivery that did get through is answered 200 duplicate).
func (s *sender) mustPostAfterReload(t testing.TB, d *delivery) answer {
	t.Helper()
	a, err := s.postRetrying(d, 3)
	if err != nil {
		t.Fatalf("posting %s: %v", d.ID, err)
	}
	return a
}

// signedSend builds a fresh event, signs it and posts it, retrying up to
// retries times on a transport error (as a sender does; the retry is then
// accepted or a duplicate). It holds the read lock throughout, so that
// setSecret cannot retire the secret while the delivery is in flight.
func (s *sender) signedSend(typ string, retries int) (*delivery, answer, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	d := &delivery{ID: s.nextID(), Type: typ, Method: http.MethodPost, Path: s.path}
	d.Body = envelope(d.ID, typ, time.Now(), "")
	d.Header = http.Header{}
	d.Header.Set("Content-Type", "application/json")
	d.Header.Set(verifier.EventHeader, typ)
	s.signWith(d, s.secret)
	a, err := s.postRetrying(d, retries)
	return d, a, err
}

// postRetrying posts d, retrying up to retries times on a connection error.
func (s *sender) postRetrying(d *delivery, retries int) (answer, error) {
	a, err := s.post(d)
	for try := 0; err != nil && isConnErr(err) && try < retries; try++ {
		time.Sleep(20 * time.Millisecond)
		a, err = s.post(d)
	}
	return a, err
}

// sendAccepted sends n fresh signed events, requires each to be answered 202
// accepted and returns their ids.
func (s *sender) sendAccepted(t testing.TB, n int) []string {
	t.Helper()
	ids := make([]string, 0, n)
	for range n {
		d, a, err := s.signedSend(typeOK, 0)
		if err != nil || a.Code != 202 || a.Status != "accepted" {
			t.Fatalf("delivery: %v %v", a, err)
		}
		ids = append(ids, d.ID)
	}
	return ids
}

// expectAnswer checks an answer's status code and (if given) JSON status.
func expectAnswer(t testing.TB, what string, a answer, code int, status string) {
	t.Helper()
	if a.Code != code || (status != "" && a.Status != status) {
		t.Errorf("%s: got %s, want %d %s", what, a, code, status)
	}
}

// randomSecret returns a fresh secret of n random printable bytes.
func randomSecret(n int) []byte {
	b := make([]byte, n/2+1)
	rand.Read(b)
	return []byte(hex.EncodeToString(b)[:n])
}
