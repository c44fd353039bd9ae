package source

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// MaxBodyBytes is the largest response body the client accepts (1 MiB).
const MaxBodyBytes = 1 << 20

// APIPath is the path of the Dataverse Web API the bridge calls.
const APIPath = "/api/data/v9.2/"

// ClientOptions configures a Client.
type ClientOptions struct {
	// OrgURL is the organisation, e.g. https://contoso.crm.dynamics.com.
	OrgURL string
	// Tokens supplies the bearer token.
	Tokens TokenProvider
	// Catalogue resolves Snapshot.BaseStatus; nil knows only the built-in
	// presences.
	Catalogue *Catalogue
	// HTTPClient is the shared client; nil builds one with MaxConns idle
	// connections kept to the organisation and redirects not followed.
	HTTPClient *http.Client
	// MaxConns is the number of connections kept open for reuse; set it to
	// the poller's MaxConcurrency. Default 64.
	MaxConns int
	// Metrics counts token failures; may be nil.
	Metrics *Metrics
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Client calls CCaaS_GetPresence and msdyn_presences for the bridge's
// organisation over one shared http.Client. It is safe for concurrent use.
type Client struct {
	orgBase       string
	presenceURL   string
	presencesURL  string
	tokens        TokenProvider
	catalogue     *Catalogue
	hc            *http.Client
	now           func() time.Time
	metrics       *Metrics
	tokenObtained atomic.Bool
	auth          atomic.Pointer[authHeader]
	bufs          sync.Pool
}

type authHeader struct {
	token string
	value []string
}

// NewHTTPClient returns the http.Client the bridge uses: keep-alive with
// maxConns idle connections per host, HTTP/2 when the server offers it, and
// redirects returned rather than followed (a redirect from Dataverse means
// something is misconfigured).
func NewHTTPClient(maxConns int) *http.Client {
	if maxConns <= 0 {
		maxConns = 64
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConns = maxConns
	tr.MaxIdleConnsPerHost = maxConns
	tr.IdleConnTimeout = 90 * time.Second
	return &http.Client{
		Transport:     tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// NewClient validates opts and returns a Client.
func NewClient(opts ClientOptions) (*Client, error) {
	u, err := url.Parse(opts.OrgURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("build presence client: organisation URL %q is not an http(s) URL", opts.OrgURL)
	}
	if opts.Tokens == nil {
		return nil, errors.New("build presence client: no token provider")
	}
	base := trimSlash(opts.OrgURL) + APIPath
	c := &Client{
		orgBase:      trimSlash(opts.OrgURL),
		presenceURL:  base + "CCaaS_GetPresence",
		presencesURL: base + "msdyn_presences?$select=msdyn_presenceid,msdyn_name,msdyn_basepresencestatus",
		tokens:       opts.Tokens,
		catalogue:    opts.Catalogue,
		hc:           opts.HTTPClient,
		now:          opts.Now,
		metrics:      opts.Metrics,
	}
	if c.hc == nil {
		c.hc = NewHTTPClient(opts.MaxConns)
	}
	if c.now == nil {
		c.now = time.Now
	}
	c.bufs.New = func() any { return new(bytes.Buffer) }
	return c, nil
}

// TokenObtained reports whether a token was ever obtained.
func (c *Client) TokenObtained() bool { return c.tokenObtained.Load() }

// Get polls CCaaS_GetPresence for one agent: GET with MSCRMCallerID set to
// the agent and the bearer token. On a 401 it asks the token provider for
// a fresh token once and, if the token changed, retries once. Failures are
// *PollError values carrying their ErrorClass.
func (c *Client) Get(ctx context.Context, agentID string) (Snapshot, error) {
	id, ok := NormalizeGUID(agentID)
	if !ok {
		return Snapshot{}, &PollError{AgentID: agentID, Class: ClassPermanent, Err: errors.New("agent ID is not a GUID")}
	}
	tok, err := c.tokens.Token(ctx)
	if err != nil {
		return Snapshot{}, &PollError{AgentID: id, Class: ClassToken, Err: fmt.Errorf("obtain token: %w", err)}
	}
	c.tokenObtained.Store(true)
	snap, err := c.get(ctx, id, tok)
	var pe *PollError
	if err == nil || !errors.As(err, &pe) || pe.Class != ClassAuth {
		return snap, err
	}
	fresh, rerr := c.tokens.Refresh(ctx, tok)
	if rerr != nil {
		return Snapshot{}, &PollError{AgentID: id, Class: ClassToken, StatusCode: http.StatusUnauthorized, Err: fmt.Errorf("refresh token after 401: %w", rerr)}
	}
	if fresh == tok {
		pe.Err = errors.New("token refused and the provider has no other")
		return Snapshot{}, pe
	}
	return c.get(ctx, id, fresh)
}

func (c *Client) authValue(tok string) []string {
	if a := c.auth.Load(); a != nil && a.token == tok {
		return a.value
	}
	a := &authHeader{token: tok, value: []string{"Bearer " + tok}}
	c.auth.Store(a)
	return a.value
}

// get makes one request.
func (c *Client) get(ctx context.Context, id, tok string) (Snapshot, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.presenceURL, nil)
	if err != nil {
		return Snapshot{}, &PollError{AgentID: id, Class: ClassPermanent, Err: fmt.Errorf("build request: %w", err)}
	}
	// The contract spells the header MSCRMCallerID; send it as spelt.
	req.Header = http.Header{
		"MSCRMCallerID": {id},
		"Authorization": c.authValue(tok),
		"Accept":        {"application/json"},
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return Snapshot{}, &PollError{AgentID: id, Class: ClassTransport, Err: redactErr(err, tok)}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		// Drain a little so the connection can be reused.
		_, _ = io.CopyN(io.Discard, resp.Body, 4<<10)
		pe := &PollError{AgentID: id, Class: classForStatus(resp.StatusCode), StatusCode: resp.StatusCode}
		if pe.Class == ClassRateLimited {
			pe.RetryAfter = parseRetryAfter(resp.Header, c.now())
		}
		return Snapshot{}, pe
	}
	if resp.ContentLength > MaxBodyBytes {
		return Snapshot{}, &PollError{AgentID: id, Class: ClassMalformed, StatusCode: 200,
			Err: fmt.Errorf("body of %d bytes exceeds the %d byte limit", resp.ContentLength, MaxBodyBytes)}
	}
	buf := c.bufs.Get().(*bytes.Buffer)
	defer func() {
		if buf.Cap() <= 64<<10 {
			buf.Reset()
			c.bufs.Put(buf)
		}
	}()
	buf.Reset()
	n, err := buf.ReadFrom(io.LimitReader(resp.Body, MaxBodyBytes+1))
	if err != nil {
		return Snapshot{}, &PollError{AgentID: id, Class: ClassTransport, StatusCode: 200, Err: redactErr(fmt.Errorf("read body: %w", err), tok)}
	}
	if n > MaxBodyBytes {
		return Snapshot{}, &PollError{AgentID: id, Class: ClassMalformed, StatusCode: 200,
			Err: fmt.Errorf("body exceeds the %d byte limit", MaxBodyBytes), Excerpt: excerpt(buf.Bytes(), tok)}
	}
	snap, err := Decode(buf.Bytes(), id)
	if err != nil {
		return Snapshot{}, &PollError{AgentID: id, Class: ClassMalformed, StatusCode: 200,
			Err: errors.New(redact(err.Error(), tok)), Excerpt: excerpt(buf.Bytes(), tok)}
	}
	snap.ObservedAt = c.now()
	snap.BaseStatus = c.catalogue.BaseStatus(snap.PresenceID)
	return snap, nil
}

// redactErr makes sure the token cannot travel in a transport error.
func redactErr(err error, tok string) error {
	if tok != "" && strings.Contains(err.Error(), tok) {
		return errors.New(redact(err.Error(), tok))
	}
	return err
}

// parseRetryAfter reads Retry-After as delay-seconds or an HTTP-date. A date
// is measured against the response's Date header when there is one (so
// clock skew does not shorten it), else against now. Absent or invalid
// values give 0.
func parseRetryAfter(h http.Header, now time.Time) time.Duration {
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs < 0 {
			return 0
		}
		return time.Duration(min(secs, 86400)) * time.Second
	}
	at, err := http.ParseTime(v)
	if err != nil {
		return 0
	}
	ref := now
	if d, err := http.ParseTime(h.Get("Date")); err == nil {
		ref = d
	}
	return max(0, at.Sub(ref))
}

// wirePresenceRow is one row of msdyn_presences.
type wirePresenceRow struct {
	ID         *string `json:"msdyn_presenceid"`
	Name       *string `json:"msdyn_name"`
	BaseStatus *int    `json:"msdyn_basepresencestatus"`
}

// ListPresences reads the organisation's presence table (msdyn_presences),
// following @odata.nextLink pages. Rows with an unknown base status are
// skipped.
func (c *Client) ListPresences(ctx context.Context) ([]Presence, error) {
	var out []Presence
	next := c.presencesURL
	for page := 0; next != ""; page++ {
		if page >= 100 {
			return nil, errors.New("list presences: more than 100 pages")
		}
		var body struct {
			Value    []wirePresenceRow `json:"value"`
			NextLink string            `json:"@odata.nextLink"`
		}
		if err := c.getJSON(ctx, next, &body); err != nil {
			return nil, fmt.Errorf("list presences: %w", err)
		}
		if body.Value == nil {
			return nil, errors.New("list presences: response has no value array")
		}
		for _, r := range body.Value {
			if r.ID == nil || r.BaseStatus == nil {
				continue
			}
			id, ok := NormalizeGUID(*r.ID)
			base, known := BaseStatusForOption(*r.BaseStatus)
			if !ok || !known {
				continue
			}
			p := Presence{ID: id, BaseStatus: base}
			if r.Name != nil {
				p.Name = *r.Name
			}
			out = append(out, p)
		}
		next = body.NextLink
		if next != "" && !strings.HasPrefix(next, c.orgBase+"/") {
			return nil, fmt.Errorf("list presences: next link %q leaves the organisation", truncate(next))
		}
	}
	return out, nil
}

// getJSON GETs an OData URL as the application user and decodes its body.
func (c *Client) getJSON(ctx context.Context, u string, v any) error {
	tok, err := c.tokens.Token(ctx)
	if err != nil {
		return fmt.Errorf("obtain token: %w", err)
	}
	c.tokenObtained.Store(true)
	for attempt := 0; ; attempt++ {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return fmt.Errorf("build request: %w", err)
		}
		req.Header = http.Header{
			"Authorization":    c.authValue(tok),
			"Accept":           {"application/json"},
			"Odata-Version":    {"4.0"},
			"Odata-Maxversion": {"4.0"},
			"Prefer":           {"odata.maxpagesize=500"},
		}
		resp, err := c.hc.Do(req)
		if err != nil {
			return redactErr(err, tok)
		}
		if resp.StatusCode == http.StatusUnauthorized && attempt == 0 {
			_, _ = io.CopyN(io.Discard, resp.Body, 4<<10)
			resp.Body.Close()
			fresh, err := c.tokens.Refresh(ctx, tok)
			if err != nil {
				return fmt.Errorf("refresh token after 401: %w", err)
			}
			if fresh != tok {
				tok = fresh
				continue
			}
			return errors.New("HTTP 401: token refused")
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			_, _ = io.CopyN(io.Discard, resp.Body, 4<<10)
			return fmt.Errorf("HTTP %d", resp.StatusCode)
		}
		dec := json.NewDecoder(io.LimitReader(resp.Body, 16*MaxBodyBytes))
		if err := dec.Decode(v); err != nil {
			return fmt.Errorf("decode body: %w", err)
		}
		return nil
	}
}
