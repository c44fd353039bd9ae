package source_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ccaas/presence-bridge/internal/simulator"
	"github.com/ccaas/presence-bridge/internal/source"
)

const testToken = "test-token-5f1e2d"

// contractServer serves CCaaS_GetPresence as the seed contract describes
// it: GET only (405), a bearer token (401), a GUID MSCRMCallerID (400).
// respond may answer for the agent instead (returning true); otherwise the
// agent's documented body is sent.
func contractServer(t *testing.T, respond func(w http.ResponseWriter, r *http.Request, agent string) bool) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/data/v9.2/CCaaS_GetPresence" {
			http.NotFound(w, r)
			return
		}
		if r.Method != http.MethodGet {
			w.WriteHeader(http.StatusMethodNotAllowed)
			return
		}
		if r.Header.Get("Authorization") != "Bearer "+testToken {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		agent, ok := source.NormalizeGUID(r.Header.Get("MSCRMCallerID"))
		if !ok {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		if respond != nil && respond(w, r, agent) {
			return
		}
		w.Header().Set("Content-Type", "application/json; odata.metadata=minimal")
		fmt.Fprint(w, body(agent, nil))
	}))
	t.Cleanup(srv.Close)
	return srv
}

func newClient(t *testing.T, url string, tokens source.TokenProvider) *source.Client {
	t.Helper()
	c, err := source.NewClient(source.ClientOptions{OrgURL: url, Tokens: tokens, Catalogue: source.NewCatalogue(nil)})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestClientGetClassifies(t *testing.T) {
	date := func(d time.Duration) string { return time.Now().Add(d).UTC().Format(http.TimeFormat) }
	tests := []struct {
		name       string
		respond    func(w http.ResponseWriter, r *http.Request, agent string) bool
		timeout    time.Duration
		wantClass  source.ErrorClass
		wantStatus int
		wantRetry  time.Duration // exact, or minimum when retryRange
		retryRange bool
		wantInErr  string
	}{
		{name: "ok", wantClass: source.ClassOK},
		{name: "400", respond: status(400, nil), wantClass: source.ClassPermanent, wantStatus: 400},
		{name: "403", respond: status(403, nil), wantClass: source.ClassPermanent, wantStatus: 403},
		{name: "404", respond: status(404, nil), wantClass: source.ClassPermanent, wantStatus: 404},
		{name: "405", respond: status(405, nil), wantClass: source.ClassPermanent, wantStatus: 405},
		{name: "429 seconds", respond: status(429, map[string]string{"Retry-After": "7"}), wantClass: source.ClassRateLimited, wantStatus: 429, wantRetry: 7 * time.Second},
		{name: "429 date", respond: status(429, map[string]string{"Retry-After": date(90 * time.Second), "Date": date(0)}), wantClass: source.ClassRateLimited, wantStatus: 429, wantRetry: 89 * time.Second, retryRange: true},
		{name: "429 without Retry-After", respond: status(429, nil), wantClass: source.ClassRateLimited, wantStatus: 429},
		{name: "500", respond: status(500, nil), wantClass: source.ClassServer, wantStatus: 500},
		{name: "502", respond: status(502, nil), wantClass: source.ClassServer, wantStatus: 502},
		{name: "503", respond: status(503, nil), wantClass: source.ClassServer, wantStatus: 503},
		{name: "504", respond: status(504, nil), wantClass: source.ClassServer, wantStatus: 504},
		{name: "not JSON", respond: raw("<html>busy</html>"), wantClass: source.ClassMalformed, wantInErr: `body starts "<html>busy</html>"`},
		{name: "wrong agent", respond: func(w http.ResponseWriter, _ *http.Request, _ string) bool {
			fmt.Fprint(w, body(agentB, nil))
			return true
		}, wantClass: source.ClassMalformed, wantInErr: "not the agent asked for"},
		{name: "oversize with length", respond: raw(`{"x":"` + strings.Repeat("a", source.MaxBodyBytes) + `"}`), wantClass: source.ClassMalformed, wantInErr: "exceeds"},
		{name: "oversize chunked", respond: func(w http.ResponseWriter, _ *http.Request, _ string) bool {
			chunk := strings.Repeat("a", 64<<10)
			fmt.Fprint(w, `{"x":"`)
			for range 20 {
				fmt.Fprint(w, chunk)
				w.(http.Flusher).Flush()
			}
			return true
		}, wantClass: source.ClassMalformed, wantInErr: "exceeds"},
		{name: "connection dropped", respond: func(w http.ResponseWriter, _ *http.Request, _ string) bool {
			conn, _, _ := w.(http.Hijacker).Hijack()
			conn.Close()
			return true
		}, wantClass: source.ClassTransport},
		{name: "timeout", timeout: 50 * time.Millisecond, respond: func(w http.ResponseWriter, r *http.Request, _ string) bool {
			<-r.Context().Done()
			return true
		}, wantClass: source.ClassTransport, wantInErr: "deadline exceeded"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := contractServer(t, tt.respond)
			c := newClient(t, srv.URL, source.StaticToken(testToken))
			ctx := t.Context()
			if tt.timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tt.timeout)
				defer cancel()
			}
			snap, err := c.Get(ctx, strings.ToUpper(agentA))
			if got := source.ClassOf(err); got != tt.wantClass {
				t.Fatalf("class = %s (err %v), want %s", got, err, tt.wantClass)
			}
			if tt.wantClass == source.ClassOK {
				if snap.AgentID != agentA || snap.BaseStatus != source.BaseAvailable || snap.ObservedAt.IsZero() {
					t.Fatalf("snapshot = %+v", snap)
				}
				return
			}
			var pe *source.PollError
			if !errors.As(err, &pe) {
				t.Fatalf("error %T is not a *PollError", err)
			}
			if tt.wantStatus != 0 && pe.StatusCode != tt.wantStatus {
				t.Errorf("status = %d, want %d", pe.StatusCode, tt.wantStatus)
			}
			if tt.retryRange {
				if pe.RetryAfter < tt.wantRetry || pe.RetryAfter > tt.wantRetry+2*time.Second {
					t.Errorf("RetryAfter = %s, want about %s", pe.RetryAfter, tt.wantRetry)
				}
			} else if pe.RetryAfter != tt.wantRetry {
				t.Errorf("RetryAfter = %s, want %s", pe.RetryAfter, tt.wantRetry)
			}
			if !strings.Contains(err.Error(), tt.wantInErr) {
				t.Errorf("error %q does not contain %q", err, tt.wantInErr)
			}
			if len(err.Error()) > 1024 {
				t.Errorf("error is %d bytes long", len(err.Error()))
			}
			if strings.Contains(err.Error(), testToken) {
				t.Errorf("error contains the token: %v", err)
			}
		})
	}
}

func status(code int, h map[string]string) func(http.ResponseWriter, *http.Request, string) bool {
	return func(w http.ResponseWriter, _ *http.Request, _ string) bool {
		for k, v := range h {
			w.Header()[k] = []string{v}
		}
		w.WriteHeader(code)
		fmt.Fprint(w, `{"error":{"code":"0x0","message":"failed"}}`)
		return true
	}
}

func raw(s string) func(http.ResponseWriter, *http.Request, string) bool {
	return func(w http.ResponseWriter, _ *http.Request, _ string) bool {
		fmt.Fprint(w, s)
		return true
	}
}

func TestClientSendsContractHeadersAndReusesConnections(t *testing.T) {
	var conns atomic.Int32
	var mu sync.Mutex
	var callers []string
	srv := httptest.NewUnstartedServer(nil)
	inner := contractServer(t, func(w http.ResponseWriter, r *http.Request, agent string) bool {
		mu.Lock()
		callers = append(callers, r.Header.Get("MSCRMCallerID"))
		mu.Unlock()
		return false
	})
	srv.Config.Handler = inner.Config.Handler
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	c := newClient(t, srv.URL, source.StaticToken(testToken))
	for range 50 {
		if _, err := c.Get(t.Context(), agentA); err != nil {
			t.Fatal(err)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("50 sequential polls opened %d connections, want 1", n)
	}
	if callers[0] != agentA {
		t.Errorf("MSCRMCallerID = %q, want %q", callers[0], agentA)
	}
}

// refreshingTokens hands out "stale" until refreshed, then testToken, and
// counts refreshes.
type refreshingTokens struct {
	mu        sync.Mutex
	current   string
	refreshes int
}

func (p *refreshingTokens) Token(context.Context) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.current, nil
}

func (p *refreshingTokens) Refresh(_ context.Context, refused string) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.current == refused {
		p.refreshes++
		p.current = testToken
	}
	return p.current, nil
}

func TestClient401RefreshesOnceAndRetries(t *testing.T) {
	var requests atomic.Int32
	srv := contractServer(t, func(http.ResponseWriter, *http.Request, string) bool {
		requests.Add(1)
		return false
	})
	tokens := &refreshingTokens{current: "stale"}
	c := newClient(t, srv.URL, tokens)
	if _, err := c.Get(t.Context(), agentA); err != nil {
		t.Fatalf("Get after a 401: %v", err)
	}
	if tokens.refreshes != 1 {
		t.Errorf("refreshes = %d, want 1", tokens.refreshes)
	}

	// A provider with no other token: one refresh attempt, no retry.
	c = newClient(t, srv.URL, source.StaticToken("refused"))
	_, err := c.Get(t.Context(), agentA)
	if source.ClassOf(err) != source.ClassAuth {
		t.Fatalf("class = %s, want unauthorized (%v)", source.ClassOf(err), err)
	}
}

func TestParseRetryAfterAgainstDateHeader(t *testing.T) {
	// The server's clock is 1 hour behind ours: Retry-After as a date must
	// be read against the server's Date, not our clock.
	serverNow := time.Now().Add(-time.Hour).UTC()
	srv := contractServer(t, status(429, map[string]string{
		"Retry-After": serverNow.Add(30 * time.Second).Format(http.TimeFormat),
		"Date":        serverNow.Format(http.TimeFormat),
	}))
	_, err := newClient(t, srv.URL, source.StaticToken(testToken)).Get(t.Context(), agentA)
	var pe *source.PollError
	if !errors.As(err, &pe) || pe.RetryAfter < 29*time.Second || pe.RetryAfter > 31*time.Second {
		t.Fatalf("err = %v, want a 429 with Retry-After 30s", err)
	}
}

// TestEveryRequestCarriesTheODataHeaders: presence calls, the catalogue and
// the custom API's definition all say which OData version they speak.
func TestEveryRequestCarriesTheODataHeaders(t *testing.T) {
	opts := simulator.DefaultOptions()
	opts.Agents = 1
	sim, err := simulator.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	seen := map[string]http.Header{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen[r.URL.Path] = r.Header.Clone()
		mu.Unlock()
		sim.Handler().ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	c := newClient(t, srv.URL, source.StaticToken(simulator.DefaultToken))
	if _, err := c.Get(t.Context(), sim.AgentIDs()[0]); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ListPresences(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := c.DiscoverCallForm(t.Context()); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 3 {
		t.Fatalf("requests to %d paths, want 3: %v", len(seen), seen)
	}
	for path, h := range seen {
		if h.Get("OData-MaxVersion") != "4.0" || h.Get("OData-Version") != "4.0" || h.Get("Accept") != "application/json" {
			t.Errorf("%s: headers %v", path, h)
		}
	}
}
