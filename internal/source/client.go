package source

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"log/slog"
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
	// Call is the form of the CCaaS_GetPresence call (BRIDGE_PRESENCE_CALL):
	// CallAuto (default) starts with the bare form, lets DiscoverCallForm
	// choose from the custom API's definition, and switches to the other
	// form once when the first answers say the form is wrong.
	Call CallForm
	// Logger receives one line when the call form is switched; default
	// discards.
	Logger *slog.Logger
	// Interner shares the values of the answers the client keeps (one per
	// agent, see LastAnswer) with the detector's states; nil means one of
	// the client's own.
	Interner *Interner
}

// CallForm is the form of the CCaaS_GetPresence call.
type CallForm int32

// Call forms.
const (
	// CallAuto discovers the form (BRIDGE_PRESENCE_CALL=auto).
	CallAuto CallForm = iota
	// CallBare is GET …/CCaaS_GetPresence, as the contract gives it.
	CallBare
	// CallFunction is GET …/CCaaS_GetPresence(ApiVersion=@v)?@v='1.0', the
	// form of a Dataverse custom-API function with a required parameter.
	CallFunction
)

// APIVersion is the value of the ApiVersion parameter of the function form.
const APIVersion = "1.0"

// CustomAPIName is the unique name of the presence custom API.
const CustomAPIName = "CCaaS_GetPresence"

// String returns "auto", "bare" or "function".
func (f CallForm) String() string {
	switch f {
	case CallBare:
		return "bare"
	case CallFunction:
		return "function"
	}
	return "auto"
}

// ParseCallForm parses BRIDGE_PRESENCE_CALL: auto, bare or function.
func ParseCallForm(s string) (CallForm, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "auto":
		return CallAuto, nil
	case "bare":
		return CallBare, nil
	case "function":
		return CallFunction, nil
	}
	return CallAuto, fmt.Errorf("call form %q is not auto, bare or function", s)
}

// Client calls CCaaS_GetPresence and msdyn_presences for the bridge's
// organisation over one shared http.Client. It is safe for concurrent use.
type Client struct {
	orgBase       string
	presenceURL   [3]string // by CallForm
	presencesURL  string
	customAPIURL  string
	auto          bool
	form          atomic.Int32 // CallBare or CallFunction
	switched      atomic.Bool
	log           *slog.Logger
	tokens        TokenProvider
	catalogue     *Catalogue
	hc            *http.Client
	now           func() time.Time
	metrics       *Metrics
	tokenObtained atomic.Bool
	tokenAccepted atomic.Bool
	auth          atomic.Pointer[authHeader]
	bufs          sync.Pool
	seed          maphash.Seed // of the hashes of bodies (LastAnswer)
	intern        *Interner    // shares the values of the answers kept
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
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("build presence client: organisation URL %q is not an http(s) URL without user info, query or fragment", redactUserinfo(opts.OrgURL))
	}
	if opts.Tokens == nil {
		return nil, errors.New("build presence client: no token provider")
	}
	base := trimSlash(opts.OrgURL) + APIPath
	c := &Client{
		orgBase: trimSlash(opts.OrgURL),
		presenceURL: [3]string{
			CallBare:     base + CustomAPIName,
			CallFunction: base + CustomAPIName + "(ApiVersion=@v)?@v=" + url.QueryEscape("'"+APIVersion+"'"),
		},
		presencesURL: base + "msdyn_presences?$select=msdyn_presenceid,msdyn_name,msdyn_basepresencestatus",
		customAPIURL: base + "customapis?$select=uniquename,isfunction&$filter=" + url.QueryEscape("uniquename eq '"+CustomAPIName+"'") +
			"&$expand=" + url.QueryEscape("CustomAPIRequestParameters($select=uniquename,name,isoptional)"),
		auto:      opts.Call == CallAuto,
		log:       opts.Logger,
		tokens:    opts.Tokens,
		catalogue: opts.Catalogue,
		hc:        opts.HTTPClient,
		now:       opts.Now,
		metrics:   opts.Metrics,
		intern:    opts.Interner,
	}
	if c.intern == nil {
		c.intern = NewInterner()
	}
	if c.hc == nil {
		c.hc = NewHTTPClient(opts.MaxConns)
	}
	if c.now == nil {
		c.now = time.Now
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	c.form.Store(int32(CallBare))
	if opts.Call == CallFunction {
		c.form.Store(int32(CallFunction))
	}
	c.bufs.New = func() any { return new(bytes.Buffer) }
	c.seed = maphash.MakeSeed()
	return c, nil
}

// TokenAccepted reports whether the organisation ever answered a request
// with something other than 401: a token it accepted.
func (c *Client) TokenAccepted() bool { return c.tokenAccepted.Load() }

// CallForm returns the form of the CCaaS_GetPresence call in use.
func (c *Client) CallForm() CallForm { return CallForm(c.form.Load()) }

// DiscoverCallForm reads the custom API's definition (customapis filtered
// on its unique name, its request parameters expanded) and, when the client
// is in CallAuto, uses the form it implies: the function form when the API
// declares an ApiVersion parameter, the bare form when it declares none.
// It returns the form in use afterwards, and an error when the definition
// could not be read (the application user may lack read access to
// customapis; the first call's answer then decides). With a form forced by
// ClientOptions.Call it reads nothing.
func (c *Client) DiscoverCallForm(ctx context.Context) (CallForm, error) {
	if !c.auto {
		return c.CallForm(), nil
	}
	var body struct {
		Value []struct {
			UniqueName string `json:"uniquename"`
			Params     []struct {
				UniqueName string `json:"uniquename"`
				Name       string `json:"name"`
				IsOptional *bool  `json:"isoptional"`
			} `json:"CustomAPIRequestParameters"`
		} `json:"value"`
	}
	if err := c.getJSON(ctx, c.customAPIURL, &body); err != nil {
		return c.CallForm(), fmt.Errorf("read custom API %s: %w", CustomAPIName, err)
	}
	for _, api := range body.Value {
		if !strings.EqualFold(api.UniqueName, CustomAPIName) {
			continue
		}
		form := CallBare
		for _, p := range api.Params {
			if strings.EqualFold(p.UniqueName, "ApiVersion") || strings.EqualFold(p.Name, "ApiVersion") {
				form = CallFunction
			}
		}
		c.form.Store(int32(form))
		c.switched.Store(true) // decided: no fallback
		return form, nil
	}
	return c.CallForm(), fmt.Errorf("read custom API %s: no such custom API in customapis", CustomAPIName)
}

// RateLimitHeaders are the x-ms-ratelimit-* headers of one answer: what is
// left of the charged user's service-protection budget; -1 when absent.
type RateLimitHeaders struct {
	// BurstRemaining is x-ms-ratelimit-burst-remaining-xrm-requests.
	BurstRemaining int
	// TimeRemaining is x-ms-ratelimit-time-remaining-xrm-requests (seconds
	// of execution time left).
	TimeRemaining float64
}

func rateLimitHeaders(h http.Header) RateLimitHeaders {
	r := RateLimitHeaders{BurstRemaining: -1, TimeRemaining: -1}
	if v, err := strconv.Atoi(strings.TrimSpace(h.Get("x-ms-ratelimit-burst-remaining-xrm-requests"))); err == nil {
		r.BurstRemaining = v
	}
	if v, err := strconv.ParseFloat(strings.TrimSpace(h.Get("x-ms-ratelimit-time-remaining-xrm-requests")), 64); err == nil {
		r.TimeRemaining = v
	}
	return r
}

// Probe polls one agent like Get and also returns the service-protection
// headers of the answer, for `bridge check`.
func (c *Client) Probe(ctx context.Context, agentID string) (Snapshot, RateLimitHeaders, error) {
	var rl RateLimitHeaders
	snap, _, err := c.getAgent(ctx, agentID, &rl, nil)
	if err != nil {
		return Snapshot{}, rl, err
	}
	return *snap, rl, nil
}

// Get polls CCaaS_GetPresence for one agent: GET with MSCRMCallerID set to
// the agent and the bearer token. On a 401 it asks the token provider for
// a fresh token once and, if the token changed, retries once. Failures are
// *PollError values carrying their ErrorClass.
func (c *Client) Get(ctx context.Context, agentID string) (Snapshot, error) {
	snap, _, err := c.getAgent(ctx, agentID, nil, nil)
	if err != nil {
		return Snapshot{}, err
	}
	return *snap, nil
}

// LastAnswer remembers the last answer of one agent that decoded: the
// length and a 64-bit hash (hash/maphash, seeded per Client) of its body,
// and its Snapshot, kept with ObservedAt zero. The zero value remembers
// nothing. A LastAnswer belongs to one agent and is used by one poll at a
// time; the Poller keeps one per agent, new when the agent is (re)added,
// and forgets it after any failed poll.
type LastAnswer struct {
	sum  uint64
	size int
	snap *Snapshot // shared with every poll that repeats the body: never modified
}

// Forget makes the next answer decoded whatever it is.
func (l *LastAnswer) Forget() { *l = LastAnswer{} }

// Poll is Get for a poller that keeps the agent's last answer: when the
// body of the answer has the length and hash of last's (and the presence
// catalogue still resolves the presence to the same base status) the
// answer is not decoded and Poll returns last's Snapshot, and unchanged
// true. Otherwise it decodes the body, remembers the answer in last and
// returns its Snapshot. Either way the Snapshot is last's, shared and
// read-only, with ObservedAt zero (the poll's time is its Observation's
// At): whoever keeps it holds the same copy as last. A body that does not
// decode makes last forget; other failures leave it as it was (the Poller
// forgets it after any failed poll). last may be nil: nothing is
// remembered, and the Snapshot is the caller's own, ObservedAt set.
func (c *Client) Poll(ctx context.Context, agentID string, last *LastAnswer) (snap *Snapshot, unchanged bool, err error) {
	return c.getAgent(ctx, agentID, nil, last)
}

func (c *Client) getAgent(ctx context.Context, agentID string, rl *RateLimitHeaders, last *LastAnswer) (*Snapshot, bool, error) {
	id, ok := NormalizeGUID(agentID)
	if !ok {
		return nil, false, &PollError{AgentID: agentID, Class: ClassPermanent, Err: errors.New("agent ID is not a GUID")}
	}
	tok, err := c.tokens.Token(ctx)
	if err != nil {
		return nil, false, &PollError{AgentID: id, Class: ClassToken, Err: fmt.Errorf("obtain token: %w", err)}
	}
	c.tokenObtained.Store(true)
	snap, same, err := c.getForm(ctx, id, tok, rl, last)
	var pe *PollError
	if err == nil || !errors.As(err, &pe) || pe.Class != ClassAuth {
		return snap, same, err
	}
	fresh, rerr := c.tokens.Refresh(ctx, tok)
	if rerr != nil {
		return nil, false, &PollError{AgentID: id, Class: ClassToken, StatusCode: http.StatusUnauthorized, Err: fmt.Errorf("refresh token after 401: %w", rerr)}
	}
	if fresh == tok {
		pe.Err = errors.New("token refused and the provider has no other")
		return nil, false, pe
	}
	return c.getForm(ctx, id, fresh, rl, last)
}

// getForm makes the request in the form in use and, in CallAuto before the
// form is settled, switches to the other form once when the answer says
// the form is wrong (a 400 naming a parameter, a 404 for an unknown
// segment), retrying the request in the new form.
func (c *Client) getForm(ctx context.Context, id, tok string, rl *RateLimitHeaders, last *LastAnswer) (*Snapshot, bool, error) {
	used := CallForm(c.form.Load())
	snap, same, err := c.get(ctx, id, tok, used, rl, last)
	var pe *PollError
	if err == nil || !c.auto || !errors.As(err, &pe) || pe.Kind != KindCallForm {
		return snap, same, err
	}
	other := CallBare
	if used == CallBare {
		other = CallFunction
	}
	if c.switched.CompareAndSwap(false, true) {
		c.form.Store(int32(other))
		c.log.Warn("presence call form switched after the organisation refused the first form",
			"from", used.String(), "to", other.String(), "status", pe.StatusCode, "code", pe.Code, "message", pe.Message)
	}
	if now := CallForm(c.form.Load()); now != used {
		return c.get(ctx, id, tok, now, rl, last)
	}
	return snap, same, err
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
func (c *Client) get(ctx context.Context, id, tok string, form CallForm, rl *RateLimitHeaders, last *LastAnswer) (*Snapshot, bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.presenceURL[form], nil)
	if err != nil {
		return nil, false, &PollError{AgentID: id, Class: ClassPermanent, Err: fmt.Errorf("build request: %w", err)}
	}
	// The contract spells the header MSCRMCallerID; send it as spelt.
	req.Header = http.Header{
		"MSCRMCallerID":    {id},
		"Authorization":    c.authValue(tok),
		"Accept":           {"application/json"},
		"Odata-Version":    {"4.0"},
		"Odata-Maxversion": {"4.0"},
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, false, &PollError{AgentID: id, Class: ClassTransport, Err: redactErr(err, tok)}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		c.tokenAccepted.Store(true)
	}
	if rl != nil {
		*rl = rateLimitHeaders(resp.Header)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, false, c.errorAnswer(id, tok, resp)
	}
	if resp.ContentLength > MaxBodyBytes {
		return nil, false, &PollError{AgentID: id, Class: ClassMalformed, StatusCode: 200,
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
		return nil, false, &PollError{AgentID: id, Class: ClassTransport, StatusCode: 200, Err: redactErr(fmt.Errorf("read body: %w", err), tok)}
	}
	if n > MaxBodyBytes {
		return nil, false, &PollError{AgentID: id, Class: ClassMalformed, StatusCode: 200,
			Err: fmt.Errorf("body exceeds the %d byte limit", MaxBodyBytes), Excerpt: excerpt(buf.Bytes(), tok)}
	}
	return c.answer(buf.Bytes(), id, tok, last)
}

// answer turns the body of a 200 answer for agent id into its Snapshot:
// last's, shared, when the body is the one last remembers (same length and
// hash) and the catalogue resolves its presence as it did; else decoded,
// and remembered in last (when not nil). A body that does not decode makes
// last forget.
func (c *Client) answer(body []byte, id, tok string, last *LastAnswer) (*Snapshot, bool, error) {
	var sum uint64
	if last != nil {
		sum = maphash.Bytes(c.seed, body)
		if s := last.snap; s != nil && last.size == len(body) && last.sum == sum && c.catalogue.BaseStatus(s.PresenceID) == s.BaseStatus {
			return s, true, nil
		}
		last.Forget()
	}
	snap, err := Decode(body, id)
	if err != nil {
		return nil, false, &PollError{AgentID: id, Class: ClassMalformed, StatusCode: 200,
			Err: errors.New(redact(err.Error(), tok)), Excerpt: excerpt(body, tok)}
	}
	snap.BaseStatus = c.catalogue.BaseStatus(snap.PresenceID)
	if last != nil {
		// The answer is kept until the agent's next change: it holds the
		// agent's ID as the poller does, the other values shared.
		if snap.AgentID == id {
			snap.AgentID = id
		}
		c.intern.Snapshot(&snap)
		*last = LastAnswer{sum: sum, size: len(body), snap: &snap} // ObservedAt zero
		return &snap, false, nil
	}
	snap.ObservedAt = c.now()
	return &snap, false, nil
}

// errorAnswer reads a non-200 answer into a *PollError: its class, the
// Dataverse code and message of its body (bounded, redacted), and for 429s
// and server errors the Retry-After, capped at RetryAfterCeiling.
func (c *Client) errorAnswer(id, tok string, resp *http.Response) *PollError {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, MaxErrorBody))
	// Drain a little more so the connection can be reused.
	_, _ = io.CopyN(io.Discard, resp.Body, 4<<10)
	de := parseDataverseError(body, tok)
	pe := &PollError{AgentID: id, Class: classForStatus(resp.StatusCode), StatusCode: resp.StatusCode,
		Code: de.Code, Message: de.Message, Kind: KindOf(resp.StatusCode, de)}
	if pe.Class == ClassRateLimited || pe.Class == ClassServer {
		pe.RetryAfter = parseRetryAfter(resp.Header, c.now())
	}
	if de.Code == "" && de.Message == "" && len(body) > 0 && pe.Class != ClassRateLimited {
		pe.Excerpt = excerpt(body, tok)
	}
	c.metrics.dataverseError(pe.Kind)
	return pe
}

// redactUserinfo drops user information from a URL before it is echoed.
func redactUserinfo(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		if i := strings.LastIndex(s, "@"); i >= 0 {
			return "…" + s[i:]
		}
		return s
	}
	if u.User != nil {
		u.User = url.User("REDACTED")
	}
	return u.String()
}

// redactErr makes sure the token cannot travel in a transport error.
func redactErr(err error, tok string) error {
	if tok != "" && strings.Contains(err.Error(), tok) {
		return errors.New(redact(err.Error(), tok))
	}
	return err
}

// RetryAfterCeiling caps any Retry-After the bridge honours: Dataverse's
// service-protection windows are 5 minutes long, so a longer wait is not
// one Dataverse asks for (an HTTP-date in year 2099 or 9999 is a bug
// somewhere, not a reason to park an agent for decades). Server errors are
// capped lower, at BRIDGE_BACKOFF_MAX, by the Poller.
const RetryAfterCeiling = DataverseWindow

// parseRetryAfter reads Retry-After as delay-seconds or an HTTP-date. A date
// is measured against the response's Date header when there is one (so
// clock skew does not shorten it), else against now. Absent or invalid
// values give 0; the result is at most RetryAfterCeiling, computed without
// overflow whatever the value.
func parseRetryAfter(h http.Header, now time.Time) time.Duration {
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs < 0 {
			return 0
		}
		return time.Duration(min(secs, int64(RetryAfterCeiling/time.Second))) * time.Second
	}
	at, err := http.ParseTime(v)
	if err != nil {
		return 0
	}
	ref := now
	if d, err := http.ParseTime(h.Get("Date")); err == nil {
		ref = d
	}
	// Time.Sub saturates at the largest Duration, so year 9999 cannot wrap.
	return min(max(0, at.Sub(ref)), RetryAfterCeiling)
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
			if !known && r.Name != nil && strings.EqualFold(strings.TrimSpace(*r.Name), BaseInactive) {
				// The system's Inactive presence, whatever option value the
				// organisation gives its base status.
				base, known = BaseInactive, true
			}
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

// HTTPError is a non-200 answer to an OData read (msdyn_presences,
// customapis), with its Dataverse code and message.
type HTTPError struct {
	// StatusCode is the HTTP status.
	StatusCode int
	// Code and Message are Dataverse's, bounded and redacted.
	Code, Message string
	// Kind classifies Code.
	Kind CodeKind
	// RetryAfter is the answer's Retry-After, capped; zero without one.
	RetryAfter time.Duration
}

// Error returns "HTTP <status> <code>: <message>".
func (e *HTTPError) Error() string {
	s := fmt.Sprintf("HTTP %d", e.StatusCode)
	if e.Code != "" {
		s += " " + e.Code
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// getJSON GETs an OData URL as the application user and decodes its body,
// in pages of at most 500 rows.
func (c *Client) getJSON(ctx context.Context, u string, v any) error {
	return c.getJSONPaged(ctx, u, 500, v)
}

// getJSONPaged is getJSON with Prefer: odata.maxpagesize=pageSize.
func (c *Client) getJSONPaged(ctx context.Context, u string, pageSize int, v any) error {
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
			"Prefer":           {"odata.maxpagesize=" + strconv.Itoa(pageSize)},
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
			return &HTTPError{StatusCode: 401, Kind: KindToken}
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			c.tokenAccepted.Store(true)
		}
		if resp.StatusCode != http.StatusOK {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, MaxErrorBody))
			de := parseDataverseError(b, tok)
			return &HTTPError{StatusCode: resp.StatusCode, Code: de.Code, Message: de.Message, Kind: KindOf(resp.StatusCode, de),
				RetryAfter: parseRetryAfter(resp.Header, c.now())}
		}
		dec := json.NewDecoder(io.LimitReader(resp.Body, 16*MaxBodyBytes))
		if err := dec.Decode(v); err != nil {
			return fmt.Errorf("decode body: %w", err)
		}
		return nil
	}
}
