package webhookcli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/hookgate/hookgate/adminapi"
)

// maxAnswer bounds the admin API's answer read into memory.
const maxAnswer = 64 << 20

// defaultAdminTimeout bounds a call to the admin API, answer included: a
// replay or purge of many dead letters takes a while; a hung endpoint must
// not hang the command.
const defaultAdminTimeout = 2 * time.Minute

// client calls the admin API of a running instance.
type client struct {
	addr    string        // the admin address, in Caddy's network address form
	storage string        // passed as ?storage= when set
	timeout time.Duration // of each call, answer included
}

// newClient finds the admin address as `caddy stop` does: --address, else
// the admin listener in --config (read with --adapter), else Caddy's default.
func newClient(c *cobra.Command) (*client, error) {
	get := func(name string) string { v, _ := c.Flags().GetString(name); return v }
	addr, err := caddycmd.DetermineAdminAPIAddress(get("address"), nil, get("config"), get("adapter"))
	if err != nil {
		return nil, fmt.Errorf("couldn't determine the admin API address: %w", err)
	}
	timeout, _ := c.Flags().GetDuration("timeout")
	if timeout <= 0 {
		timeout = defaultAdminTimeout
	}
	return &client{addr: addr, storage: get("storage"), timeout: timeout}, nil
}

// request is one request to the admin API's /webhooks/ endpoints.
type request struct {
	method string
	path   string     // under /webhooks/, already escaped
	query  url.Values // may be nil; empty values are left out
	body   any        // marshaled to JSON unless nil
}

// call sends req and returns the answer's body. An error answer becomes an
// *adminapi.Error when its body is the API's JSON error.
func (cl *client) call(req request) ([]byte, error) {
	q := url.Values{}
	for k, vs := range req.query {
		for _, v := range vs {
			if v != "" {
				q.Add(k, v)
			}
		}
	}
	if cl.storage != "" {
		q.Set("storage", cl.storage)
	}
	uri := "/webhooks/" + req.path
	if len(q) > 0 {
		uri += "?" + q.Encode()
	}
	var body io.Reader
	if req.body != nil {
		b, err := json.Marshal(req.body)
		if err != nil {
			return nil, err
		}
		body = bytes.NewReader(b)
	}
	resp, err := cl.do(req.method, uri, body)
	if err != nil {
		return nil, fmt.Errorf("admin API at %s: %w", cl.addr, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return nil, fmt.Errorf("reading the admin API's answer: %w", err)
	}
	if resp.StatusCode >= 400 {
		apiErr := &adminapi.Error{Status: resp.StatusCode}
		if json.Unmarshal(b, apiErr) == nil && apiErr.Message != "" {
			return nil, apiErr
		}
		return nil, fmt.Errorf("admin API at %s: HTTP %d: %s", cl.addr, resp.StatusCode, strings.TrimSpace(string(b)))
	}
	return b, nil
}

// do sends one request to the admin endpoint the way caddycmd's
// AdminAPIRequest does (same dialing, Origin and Host), but hands back
// every answer, error answers included.
func (cl *client) do(method, uri string, body io.Reader) (*http.Response, error) {
	na, err := caddy.ParseNetworkAddress(cl.addr)
	if err != nil || na.PortRangeSize() > 1 {
		return nil, fmt.Errorf("invalid admin address %s: %v", cl.addr, err)
	}
	origin, dialAddr := "http://"+na.JoinHostPort(0), na.JoinHostPort(0)
	socket := na.IsUnixNetwork() || na.IsFdNetwork()
	if socket {
		// The Host of a request over a socket must be a loopback address.
		origin = "http://127.0.0.1"
		dialAddr, _, _ = strings.Cut(dialAddr, "|") // a unix socket's permission bits
	}
	req, err := http.NewRequest(method, origin+uri, body)
	if err != nil {
		return nil, err
	}
	if !socket {
		req.Header.Set("Origin", origin)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	var d net.Dialer
	hc := http.Client{Timeout: cl.timeout, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, na.Network, dialAddr)
		},
		DisableKeepAlives: true,
	}}
	return hc.Do(req)
}
