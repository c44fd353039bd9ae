package source_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"

	"github.com/ccaas/presence-bridge/internal/simulator"
	"github.com/ccaas/presence-bridge/internal/source"
)

// fakeAuthority is a local Entra ID: a TLS server with the OpenID
// configuration and a client-credentials token endpoint. Tokens live 240 s,
// under azidentity's 5-minute cache margin, so every GetToken reaches the
// endpoint and the provider's own cache is what is tested.
type fakeAuthority struct {
	srv     *httptest.Server
	secret  string
	scope   string
	hits    atomic.Int32
	mu      sync.Mutex
	valid   map[string]bool
	issued  []string
	refuses bool
}

func newFakeAuthority(t *testing.T, scope string) *fakeAuthority {
	t.Helper()
	a := &fakeAuthority{secret: "client-s3cret-value", scope: scope, valid: map[string]bool{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{tenant}/v2.0/.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		base := "https://" + r.Host + "/" + r.PathValue("tenant")
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]string{
			"token_endpoint":         base + "/oauth2/v2.0/token",
			"issuer":                 base + "/v2.0",
			"authorization_endpoint": base + "/oauth2/v2.0/authorize",
		})
	})
	mux.HandleFunc("POST /{tenant}/oauth2/v2.0/token", func(w http.ResponseWriter, r *http.Request) {
		a.hits.Add(1)
		a.mu.Lock()
		defer a.mu.Unlock()
		if err := r.ParseForm(); err != nil || r.FormValue("grant_type") != "client_credentials" ||
			r.FormValue("client_secret") != a.secret || !strings.Contains(" "+r.FormValue("scope")+" ", " "+a.scope+" ") || a.refuses {
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprint(w, `{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided."}`)
			return
		}
		tok := fmt.Sprintf("eyJ.entra-token-%d.sig", len(a.issued)+1)
		a.issued = append(a.issued, tok)
		a.valid[tok] = true
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"token_type":"Bearer","expires_in":240,"ext_expires_in":240,"access_token":%q}`, tok)
	})
	a.srv = httptest.NewTLSServer(mux)
	t.Cleanup(a.srv.Close)
	return a
}

func (a *fakeAuthority) credential(t *testing.T) azcore.TokenCredential {
	t.Helper()
	cred, err := azidentity.NewClientSecretCredential("contoso-tenant", "bridge-client", a.secret, &azidentity.ClientSecretCredentialOptions{
		ClientOptions: azcore.ClientOptions{
			Cloud:     cloud.Configuration{ActiveDirectoryAuthorityHost: a.srv.URL + "/"},
			Transport: a.srv.Client(), // trusts the test server's CA
		},
		DisableInstanceDiscovery: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	return cred
}

func (a *fakeAuthority) validate(tok string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.valid[tok] {
		return errors.New("token refused")
	}
	return nil
}

func (a *fakeAuthority) revokeAll() {
	a.mu.Lock()
	defer a.mu.Unlock()
	clear(a.valid)
}

func (a *fakeAuthority) tokens() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.issued...)
}

func TestEntraTokenAgainstFakeAuthority(t *testing.T) {
	var authority *fakeAuthority
	opts := simulator.DefaultOptions()
	opts.Agents = 20
	opts.StaticTokens = nil
	opts.ValidateToken = func(tok string) error { return authority.validate(tok) }
	sim, apiURL := serveSim(t, opts)
	authority = newFakeAuthority(t, apiURL+"/.default")

	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	now := time.Now()
	var clockMu sync.Mutex
	clock := func() time.Time { clockMu.Lock(); defer clockMu.Unlock(); return now }
	entra, err := source.NewEntraToken(source.EntraTokenOptions{
		OrgURL: apiURL + "/", Credential: authority.credential(t), RefreshBefore: 30 * time.Second, Logger: logger, Now: clock,
	})
	if err != nil {
		t.Fatal(err)
	}
	client := newClient(t, apiURL, entra)
	agents := sim.AgentIDs()

	pollAll := func(step string) {
		t.Helper()
		var wg sync.WaitGroup
		errs := make(chan error, len(agents))
		for _, id := range agents {
			wg.Go(func() {
				if _, err := client.Get(t.Context(), id); err != nil {
					errs <- err
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("%s: %v", step, err)
		}
	}

	pollAll("first round")
	if got := authority.hits.Load(); got != 1 {
		t.Fatalf("after %d concurrent polls the authority was asked %d times, want 1 (cached)", len(agents), got)
	}
	if !client.TokenObtained() {
		t.Error("TokenObtained is false")
	}

	// The API refuses the token: every agent gets a 401 at once, which
	// must cost exactly one refresh, and every poll must then succeed.
	authority.revokeAll()
	pollAll("after revocation")
	if got := authority.hits.Load(); got != 2 {
		t.Fatalf("a burst of 401s led to %d token requests, want 2 (one refresh)", got)
	}

	// Refreshed before expiry: 215 s into a 240 s token with a 30 s margin.
	clockMu.Lock()
	now = now.Add(215 * time.Second)
	clockMu.Unlock()
	pollAll("near expiry")
	if got := authority.hits.Load(); got != 3 {
		t.Fatalf("near expiry the authority was asked %d times in all, want 3", got)
	}

	// The authority now refuses: the provider keeps the still-valid token
	// and logs the failure without any token.
	authority.mu.Lock()
	authority.refuses = true
	authority.mu.Unlock()
	clockMu.Lock()
	now = now.Add(215 * time.Second)
	clockMu.Unlock()
	pollAll("authority down, token still valid")

	// Once the token expired too, polls fail with ClassToken.
	clockMu.Lock()
	now = now.Add(time.Hour)
	clockMu.Unlock()
	_, err = client.Get(t.Context(), agents[0])
	if source.ClassOf(err) != source.ClassToken {
		t.Fatalf("class = %s (%v), want token", source.ClassOf(err), err)
	}
	for _, tok := range authority.tokens() {
		if strings.Contains(err.Error(), tok) || strings.Contains(logs.String(), tok) {
			t.Fatalf("token %q appears in an error or log: %v\n%s", tok, err, logs.String())
		}
	}
	if strings.Contains(err.Error(), authority.secret) || strings.Contains(logs.String(), authority.secret) {
		t.Fatalf("client secret appears in an error or log")
	}
	if !strings.Contains(logs.String(), "refresh Entra ID token failed") {
		t.Errorf("no log line for the failed refresh:\n%s", logs.String())
	}
}

func TestTokenNeverInMalformedError(t *testing.T) {
	// A server echoing the request (a misbehaving proxy) must not get the
	// token into the error's excerpt.
	srv := contractServer(t, func(w http.ResponseWriter, r *http.Request, _ string) bool {
		fmt.Fprintf(w, "you sent Authorization: %s", r.Header.Get("Authorization"))
		return true
	})
	_, err := newClient(t, srv.URL, source.StaticToken(testToken)).Get(t.Context(), agentA)
	if source.ClassOf(err) != source.ClassMalformed {
		t.Fatalf("class = %s", source.ClassOf(err))
	}
	if strings.Contains(err.Error(), testToken) || !strings.Contains(err.Error(), "[REDACTED]") {
		t.Fatalf("error = %v", err)
	}
}

func TestFileTokenFollowsRotation(t *testing.T) {
	dir := t.TempDir()
	// Kubernetes projects a secret through symlinks swapped atomically.
	write := func(gen, tok string) {
		t.Helper()
		d := filepath.Join(dir, gen)
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "token"), []byte(tok+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		tmp := filepath.Join(dir, "..data_tmp")
		if err := os.Symlink(gen, tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
			t.Fatal(err)
		}
	}
	write("gen1", "first-token")
	link := filepath.Join(dir, "token")
	if err := os.Symlink(filepath.Join("..data", "token"), link); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	ft, err := source.NewFileToken(source.FileTokenOptions{Path: link, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	if tok, _ := ft.Token(t.Context()); tok != "first-token" {
		t.Fatalf("token = %q", tok)
	}
	write("gen2", "second-token")
	if tok, _ := ft.Token(t.Context()); tok != "first-token" {
		t.Fatalf("token re-read before CheckEvery: %q", tok)
	}
	now = now.Add(2 * time.Second)
	if tok, _ := ft.Token(t.Context()); tok != "second-token" {
		t.Fatalf("token after rotation = %q, want second-token", tok)
	}
	// Refresh after a 401 re-reads at once.
	write("gen3", "third-token")
	if tok, _ := ft.Refresh(t.Context(), "second-token"); tok != "third-token" {
		t.Fatalf("token after Refresh = %q, want third-token", tok)
	}
	// An unreadable or empty file at start is an error naming the file.
	empty := filepath.Join(dir, "empty")
	_ = os.WriteFile(empty, []byte("\n"), 0o600)
	for _, p := range []string{empty, filepath.Join(dir, "missing")} {
		if _, err := source.NewFileToken(source.FileTokenOptions{Path: p}); err == nil || !strings.Contains(err.Error(), p) {
			t.Errorf("NewFileToken(%s) error = %v", p, err)
		}
	}
}
