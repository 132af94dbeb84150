package caddymodule

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/hookgate/hookgate/spool"
)

// Request and response helpers shared by webhook_ingest, webhook_publish
// and the admin API: reading a request's body within its bounds, and
// writing JSON answers, among them the answer to a failed spool write.

// Defaults shared by webhook_ingest and webhook_publish.
const (
	defaultDedupeWindow = 72 * time.Hour
	defaultMaxBody      = 1 << 20
	// drainWait is how long the rest of a refused request's body is read
	// after the answer before the connection closes: a sender still
	// writing it then reads the answer rather than a connection reset.
	drainWait = time.Second
)

// refusalLogEvery is how often a refusal (503 while the spool is full,
// starting or stopping, or busy reading bodies) is logged, per message: a
// sender's retries, or every sender's, would log one line per request.
const refusalLogEvery = 10 * time.Second

// refusalLogger is log sampled for refusals: the first of each message in
// every refusalLogEvery, no more. The metrics count every one.
func refusalLogger(log *zap.Logger) *zap.Logger {
	return log.WithOptions(zap.WrapCore(func(c zapcore.Core) zapcore.Core {
		return zapcore.NewSamplerWithOptions(c, refusalLogEvery, 1, 0)
	}))
}

// spoolFailure is the answer to a spool write that failed, or to a body
// refused with errBusy: 503 with a Retry-After while the spool is full
// (30 s), not open (starting or stopping, 5 s) or the bodies being read
// hold max_unverified_bytes (5 s), else 500.
func spoolFailure(err error) (code int, retryAfter, msg string) {
	switch {
	case errors.Is(err, errBusy):
		return http.StatusServiceUnavailable, "5", err.Error()
	case errors.Is(err, spool.ErrFull):
		return http.StatusServiceUnavailable, "30", "the spool is full; retry later"
	case errors.Is(err, errNotStarted), errors.Is(err, spool.ErrClosed):
		return http.StatusServiceUnavailable, "5", "the gateway is starting or stopping; retry later"
	}
	return http.StatusInternalServerError, "", "the event could not be stored"
}

// quote encodes s as a JSON string, for envelope members
// (verifier.EncodeEnvelope).
func quote(s string) json.RawMessage {
	b, _ := json.Marshal(s)
	return b
}

// writeJSON writes v as a JSON answer with status code.
func writeJSON(w http.ResponseWriter, code int, v any) error {
	body, err := json.Marshal(v)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, err = w.Write(append(body, '\n'))
	return err
}

// readRequest runs the checks every webhook request gets, in the order of
// docs/ingest.md (POST, JSON without a content encoding, the size
// before and while reading, the read deadline), and returns the body, or
// the status, a short reason and the error of the first failure. The
// body's buffer is reserved in held, which the caller releases once the
// body is verified.
//
// A failure leaves the body unread, so the answer closes the connection,
// and what the server then reads of the body is bounded by drainWait:
// otherwise it would first drain the body (Caddy wraps the body, which
// hides how much is left), waiting for a sender that announced a large body
// and holds it back, or sending a 100 Continue to one that asked.
func readRequest(w http.ResponseWriter, r *http.Request, max int64, timeout time.Duration, held *hold) (body []byte, status int, reason string, err error) {
	defer func() {
		if err != nil && r.ContentLength != 0 && r.ProtoMajor == 1 {
			w.Header().Set("Connection", "close")
			http.NewResponseController(w).SetReadDeadline(time.Now().Add(drainWait))
		}
	}()
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		return nil, http.StatusMethodNotAllowed, "method", errors.New("only POST is accepted")
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		return nil, http.StatusUnsupportedMediaType, "content_type", errors.New("Content-Type must be application/json")
	}
	if enc := r.Header.Values("Content-Encoding"); len(enc) > 1 || (len(enc) == 1 && !strings.EqualFold(enc[0], "identity")) {
		return nil, http.StatusUnsupportedMediaType, "content_encoding", errors.New("Content-Encoding is not supported")
	}
	if r.ContentLength > max {
		return nil, http.StatusRequestEntityTooLarge, "too_large", fmt.Errorf("body over %d bytes", max)
	}
	if body, status, err = readBody(w, r, max, timeout, held); err != nil {
		return nil, status, "body", err
	}
	return body, 0, "", nil
}

// readBody reads a request body of at most max bytes within timeout, its
// buffer reserved in held, and says which status a failure maps to (413,
// 408, 503 with errBusy, or 400).
func readBody(w http.ResponseWriter, r *http.Request, max int64, timeout time.Duration, held *hold) ([]byte, int, error) {
	rc := http.NewResponseController(w)
	if err := rc.SetReadDeadline(time.Now().Add(timeout)); err == nil {
		defer rc.SetReadDeadline(time.Time{})
	}
	size := max + 1 // +1: room to see EOF, or the byte over max
	if r.ContentLength >= 0 {
		size = r.ContentLength + 1
	}
	body, err := readAll(http.MaxBytesReader(w, r.Body, max), size, held)
	var tooLarge *http.MaxBytesError
	var handlerErr caddyhttp.HandlerError
	switch {
	case err == nil:
		return body, 0, nil
	case errors.Is(err, errBusy):
		return nil, http.StatusServiceUnavailable, err
	case errors.As(err, &tooLarge):
		return nil, http.StatusRequestEntityTooLarge, fmt.Errorf("body over %d bytes", max)
	case errors.As(err, &handlerErr): // e.g. request_body's own limit
		return nil, handlerErr.StatusCode, err
	case errors.Is(err, os.ErrDeadlineExceeded):
		return nil, http.StatusRequestTimeout, errors.New("reading the body timed out")
	}
	return nil, http.StatusBadRequest, errors.New("reading the body failed")
}

// readAll is io.ReadAll for a body of at most size bytes. Its first buffer
// takes size bytes up to readAhead; past that it grows with the bytes that
// arrived, by a quarter at a time (as append grows large slices), so that a
// sender that announces a large body and sends little of it gets little
// memory. Each growth is first reserved in held, and readAll gives up with
// errBusy when that fails.
func readAll(rd io.Reader, size int64, held *hold) ([]byte, error) {
	const minGrowth = 4 << 10
	var b []byte
	for {
		if len(b) == cap(b) {
			grow := max(len(b)/4, minGrowth)
			if b == nil {
				grow = max(grow, readAhead)
			}
			if rest := size - int64(len(b)); rest > 0 {
				grow = int(min(int64(grow), rest))
			}
			if !held.reserve(grow) {
				return b, errBusy
			}
			b = append(make([]byte, 0, len(b)+grow), b...)
		}
		n, err := rd.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return b, err
		}
	}
}

// readAhead is the most readAll takes at once, before any of the body
// arrived: a body of up to 64 KiB (most webhooks) is read into one buffer
// of its announced size, with its byte for EOF, not grown and copied.
const readAhead = 64<<10 + 1

// errBusy refuses a body when the bodies being read and verified hold the
// webhooks app's max_unverified_bytes.
var errBusy = errors.New("too many request bodies are being read; retry later")

// byteBudget bounds the bytes that request bodies hold until they are
// verified, over all the handlers of a configuration.
type byteBudget struct {
	limit int64
	used  atomic.Int64
}

// hold starts an empty hold on the budget.
func (b *byteBudget) hold() hold { return hold{budget: b} }

// hold is what one request holds of a byteBudget; release gives it back.
// It is used by one goroutine.
type hold struct {
	budget *byteBudget
	n      int64
}

// reserve adds n bytes to the hold if the budget has room for them.
func (h *hold) reserve(n int) bool {
	if h.budget.used.Add(int64(n)) > h.budget.limit {
		h.budget.used.Add(-int64(n))
		return false
	}
	h.n += int64(n)
	return true
}

// release gives the hold back; it may be called more than once.
func (h *hold) release() {
	h.budget.used.Add(-h.n)
	h.n = 0
}

// checkSpoolable refuses a max_body that one spool entry cannot hold.
func checkSpoolable(n int64) error {
	if n > spool.MaxBodySize {
		return fmt.Errorf("max_body %d is above %d bytes, the most one spooled event can hold", n, spool.MaxBodySize)
	}
	return nil
}

// durationOr is d, or def if d is not set.
func durationOr(d caddy.Duration, def time.Duration) time.Duration {
	if d > 0 {
		return time.Duration(d)
	}
	return def
}
