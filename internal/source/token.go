package source

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
)

// TokenProvider supplies the bearer token sent with every request.
//
// Token returns the current token, fetching or re-reading it when needed.
// Refresh is called after the API refused the token refused with a 401; it
// returns a fresh token. Implementations make concurrent Refresh calls for
// the same refused token cost one refresh: when the current token already
// differs from refused, it is returned without fetching again.
type TokenProvider interface {
	Token(ctx context.Context) (string, error)
	Refresh(ctx context.Context, refused string) (string, error)
}

// Compile-time checks.
var (
	_ TokenProvider = StaticToken("")
	_ TokenProvider = (*FileToken)(nil)
	_ TokenProvider = (*EntraToken)(nil)
)

// StaticToken is a fixed bearer token (BRIDGE_TOKEN). Refresh returns the
// same token, so a 401 is not retried with it.
type StaticToken string

// Token returns the token.
func (s StaticToken) Token(context.Context) (string, error) {
	if s == "" {
		return "", errors.New("static token is empty")
	}
	return string(s), nil
}

// Refresh returns the token: a static token cannot be refreshed.
func (s StaticToken) Refresh(ctx context.Context, _ string) (string, error) { return s.Token(ctx) }

// FileToken reads the bearer token from a file (BRIDGE_TOKEN_FILE) and
// re-reads it when the file changes, as when Kubernetes rotates a projected
// secret by swapping a symlink. The file is checked at most once every
// CheckEvery, and at once on Refresh. Surrounding white space is trimmed.
type FileToken struct {
	path       string
	checkEvery time.Duration
	now        func() time.Time
	metrics    *Metrics

	mu        sync.Mutex
	token     string
	modTime   time.Time
	size      int64
	checkedAt time.Time
}

// FileTokenOptions configures a FileToken.
type FileTokenOptions struct {
	// Path is the token file.
	Path string
	// CheckEvery bounds how often the file is stat'ed; default 1s.
	CheckEvery time.Duration
	// Metrics, if set, counts re-reads and failures.
	Metrics *Metrics
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// NewFileToken reads the token file once and returns a provider for it. It
// fails when the file is unreadable or empty.
func NewFileToken(opts FileTokenOptions) (*FileToken, error) {
	f := &FileToken{path: opts.Path, checkEvery: opts.CheckEvery, now: opts.Now, metrics: opts.Metrics}
	if f.checkEvery <= 0 {
		f.checkEvery = time.Second
	}
	if f.now == nil {
		f.now = time.Now
	}
	if err := f.reload(true); err != nil {
		return nil, err
	}
	return f, nil
}

// reload re-reads the file if it changed (or always when force is set).
// Callers hold f.mu, except NewFileToken.
func (f *FileToken) reload(force bool) error {
	f.checkedAt = f.now()
	st, err := os.Stat(f.path)
	if err != nil {
		f.metrics.tokenFailure()
		return fmt.Errorf("stat token file %s: %w", f.path, err)
	}
	if !force && f.token != "" && st.ModTime().Equal(f.modTime) && st.Size() == f.size {
		return nil
	}
	b, err := os.ReadFile(f.path)
	if err != nil {
		f.metrics.tokenFailure()
		return fmt.Errorf("read token file %s: %w", f.path, err)
	}
	tok := string(bytes.TrimSpace(b))
	if tok == "" {
		f.metrics.tokenFailure()
		return fmt.Errorf("read token file %s: file is empty", f.path)
	}
	if tok != f.token {
		f.metrics.tokenRefreshed()
	}
	f.token, f.modTime, f.size = tok, st.ModTime(), st.Size()
	return nil
}

// Token returns the file's token, re-reading the file if it changed since
// it was last checked (at most once every CheckEvery). If the file became
// unreadable the last token read is kept.
func (f *FileToken) Token(context.Context) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.now().Sub(f.checkedAt) >= f.checkEvery {
		if err := f.reload(false); err != nil && f.token == "" {
			return "", err
		}
	}
	return f.token, nil
}

// Refresh re-reads the file at once unless the token already changed since
// refused was handed out.
func (f *FileToken) Refresh(context.Context, string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.reload(false); err != nil {
		return "", err
	}
	return f.token, nil
}

// EntraToken obtains tokens from Microsoft Entra ID through an azidentity
// credential for the scope "<org>/.default". A token is cached and
// refreshed RefreshBefore its expiry (or at the refresh time Entra ID
// suggests, if earlier); while one caller refreshes a still-valid token,
// the others keep using it.
type EntraToken struct {
	cred          azcore.TokenCredential
	scope         string
	refreshBefore time.Duration
	now           func() time.Time
	metrics       *Metrics
	log           *slog.Logger

	mu         sync.Mutex
	fetching   chan struct{} // closed when the running fetch ends; nil when none
	token      azcore.AccessToken
	expiresAt  time.Time // in the provider's clock
	refreshAt  time.Time
	fetchError error
}

// EntraTokenOptions configures an EntraToken.
type EntraTokenOptions struct {
	// OrgURL is the organisation, e.g. https://contoso.crm.dynamics.com;
	// the scope requested is OrgURL + "/.default".
	OrgURL string
	// Credential obtains tokens. Nil means azidentity's default credential
	// chain (environment: client secret or certificate; workload identity;
	// managed identity; developer tools).
	Credential azcore.TokenCredential
	// RefreshBefore is how long before expiry a token is replaced; default
	// 5m.
	RefreshBefore time.Duration
	// Metrics, if set, counts refreshes and failures.
	Metrics *Metrics
	// Logger receives one line per failed refresh; default discards.
	Logger *slog.Logger
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// NewEntraToken builds an Entra ID token provider. It does not fetch a token
// yet.
func NewEntraToken(opts EntraTokenOptions) (*EntraToken, error) {
	if opts.OrgURL == "" {
		return nil, errors.New("build Entra ID token provider: organisation URL is empty")
	}
	cred := opts.Credential
	if cred == nil {
		c, err := azidentity.NewDefaultAzureCredential(nil)
		if err != nil {
			return nil, fmt.Errorf("build Entra ID default credential: %w", err)
		}
		cred = c
	}
	e := &EntraToken{
		cred: cred, scope: trimSlash(opts.OrgURL) + "/.default",
		refreshBefore: opts.RefreshBefore, now: opts.Now, metrics: opts.Metrics, log: opts.Logger,
	}
	if e.refreshBefore <= 0 {
		e.refreshBefore = 5 * time.Minute
	}
	if e.now == nil {
		e.now = time.Now
	}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	return e, nil
}

// Token returns a cached token, fetching one when there is none, it has
// expired, or its refresh time has come.
func (e *EntraToken) Token(ctx context.Context) (string, error) {
	return e.get(ctx, "")
}

// Refresh fetches a new token unless the cached one already differs from
// refused. Note that azidentity keeps its own cache: without a claims
// challenge it may hand back the same token until that token nears expiry.
func (e *EntraToken) Refresh(ctx context.Context, refused string) (string, error) {
	return e.get(ctx, refused)
}

// get returns the cached token, or fetches one. With refused set, a cached
// token equal to refused is treated as unusable.
func (e *EntraToken) get(ctx context.Context, refused string) (string, error) {
	for {
		e.mu.Lock()
		now := e.now()
		tok := e.token
		valid := tok.Token != "" && now.Before(e.expiresAt) && (refused == "" || tok.Token != refused)
		if valid && now.Before(e.refreshAt) {
			e.mu.Unlock()
			return tok.Token, nil
		}
		if wait := e.fetching; wait != nil {
			e.mu.Unlock()
			if valid {
				// Someone is refreshing a token that still works.
				return tok.Token, nil
			}
			select {
			case <-wait:
				e.mu.Lock()
				err := e.fetchError
				e.mu.Unlock()
				if err != nil {
					return "", err
				}
				continue
			case <-ctx.Done():
				return "", fmt.Errorf("wait for Entra ID token: %w", ctx.Err())
			}
		}
		done := make(chan struct{})
		e.fetching = done
		e.mu.Unlock()

		got, err := e.cred.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{e.scope}})

		e.mu.Lock()
		e.fetching = nil
		if err != nil {
			e.fetchError = fmt.Errorf("get Entra ID token for %s: %w", e.scope, err)
			e.metrics.tokenFailure()
		} else {
			e.fetchError = nil
			e.metrics.tokenRefreshed()
			// azidentity's times are wall-clock; carry them over to the
			// provider's clock (the same one outside tests).
			wall, now := time.Now(), e.now()
			e.token = got
			e.expiresAt = now.Add(got.ExpiresOn.Sub(wall))
			e.refreshAt = e.expiresAt.Add(-e.refreshBefore)
			if !got.RefreshOn.IsZero() {
				if r := now.Add(got.RefreshOn.Sub(wall)); r.Before(e.refreshAt) {
					e.refreshAt = r
				}
			}
		}
		fetchErr, exp := e.fetchError, e.expiresAt
		close(done)
		e.mu.Unlock()
		if fetchErr != nil {
			if valid {
				e.log.Warn("refresh Entra ID token failed; using the current one until it expires",
					"expires_in", exp.Sub(now).Round(time.Second), "err", fetchErr)
				return tok.Token, nil
			}
			return "", fetchErr
		}
		return got.Token, nil
	}
}

func trimSlash(s string) string {
	for len(s) > 0 && s[len(s)-1] == '/' {
		s = s[:len(s)-1]
	}
	return s
}
