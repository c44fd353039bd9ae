// connect.go holds the NATS connection: ConnOptions (servers, one
// authentication method, TLS, reconnects), Connect, which logs and counts
// every connection event without secrets, and ConnectRetry, which waits
// with backoff for servers that cannot be reached yet.

package publish

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/nats-io/nats.go"
)

// Defaults of [ConnOptions].
const (
	DefaultClientName     = "ccaas-presence-bridge"
	DefaultConnectTimeout = 5 * time.Second
	DefaultReconnectWait  = time.Second
)

// ConnOptions say how to reach NATS. At most one authentication method may be
// set: CredsFile, NKeySeedFile, User and Password, or Token.
type ConnOptions struct {
	// URL is one server URL or a comma-separated list of them (a cluster).
	URL string
	// Name is the client name the servers show; default DefaultClientName.
	Name string
	// CredsFile is a NATS credentials file (user JWT and NKey seed).
	CredsFile string
	// NKeySeedFile is a file holding a user NKey seed.
	NKeySeedFile string
	// User and Password authenticate with a user name and password.
	User     string
	Password string
	// Token authenticates with a token.
	Token string
	// CAFile is a PEM file of the certificate authorities trusted for the
	// servers' certificates; setting it requires TLS.
	CAFile string
	// CertFile and KeyFile are the client certificate and key for mutual TLS.
	CertFile string
	KeyFile  string
	// ConnectTimeout bounds each dial and handshake; default DefaultConnectTimeout.
	ConnectTimeout time.Duration
	// ReconnectWait is the pause between reconnect rounds; default
	// DefaultReconnectWait. Reconnecting never gives up.
	ReconnectWait time.Duration
	// ReconnectBufSize is how many bytes of publishes are buffered while
	// reconnecting; 0 keeps the client default (8 MiB).
	ReconnectBufSize int
	// Logger receives connection events; default discards them.
	Logger *slog.Logger
	// Metrics counts reconnects, disconnects and asynchronous errors; may be nil.
	Metrics *Metrics
}

// ErrAuthorization reports that the servers refused the configured credentials.
var ErrAuthorization = errors.New("NATS refused the credentials (authorization violation)")

func (o *ConnOptions) validate() error {
	methods := 0
	for _, set := range []bool{o.CredsFile != "", o.NKeySeedFile != "", o.User != "" || o.Password != "", o.Token != ""} {
		if set {
			methods++
		}
	}
	switch {
	case strings.TrimSpace(o.URL) == "":
		return errors.New("no NATS server URL")
	case methods > 1:
		return errors.New("more than one NATS authentication method set (credentials file, NKey seed file, user and password, token): choose one")
	case o.Password != "" && o.User == "":
		return errors.New("NATS password set without a user")
	case (o.CertFile == "") != (o.KeyFile == ""):
		return errors.New("NATS client certificate and key must be set together")
	}
	for _, u := range strings.Split(o.URL, ",") {
		parsed, err := url.Parse(strings.TrimSpace(u))
		if err != nil || parsed.Host == "" {
			return fmt.Errorf("NATS server URL %q is not a URL with a host", RedactURL(strings.TrimSpace(u)))
		}
	}
	return nil
}

// RedactURL hides the password or token of a URL's user information, for logs.
func RedactURL(u string) string {
	parsed, err := url.Parse(u)
	if err != nil || parsed.User == nil {
		return u
	}
	return parsed.Redacted()
}

// RedactURLs redacts each URL of a comma-separated list.
func RedactURLs(list string) string {
	parts := strings.Split(list, ",")
	for i, p := range parts {
		parts[i] = RedactURL(strings.TrimSpace(p))
	}
	return strings.Join(parts, ",")
}

// ctxDialer dials with the Connect context for the first connection and
// without one for reconnects, which must go on after Connect returned.
type ctxDialer struct {
	mu     sync.Mutex
	ctx    context.Context
	dialer net.Dialer
}

func (d *ctxDialer) Dial(network, address string) (net.Conn, error) {
	d.mu.Lock()
	ctx := d.ctx
	d.mu.Unlock()
	return d.dialer.DialContext(ctx, network, address)
}

func (d *ctxDialer) detach() {
	d.mu.Lock()
	d.ctx = context.Background()
	d.mu.Unlock()
}

// Connect connects to NATS. A refused credential, an unreadable file or an
// unreachable server at the first attempt is an error (ErrAuthorization for
// a refused credential); once connected the connection reconnects forever,
// and every connection event is logged (without secrets) and counted.
func Connect(ctx context.Context, opts ConnOptions) (*nats.Conn, error) {
	if err := opts.validate(); err != nil {
		return nil, fmt.Errorf("connect to NATS: %w", err)
	}
	if opts.Name == "" {
		opts.Name = DefaultClientName
	}
	if opts.ConnectTimeout <= 0 {
		opts.ConnectTimeout = DefaultConnectTimeout
	}
	if opts.ReconnectWait <= 0 {
		opts.ReconnectWait = DefaultReconnectWait
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "nats")
	m := opts.Metrics
	servers := RedactURLs(opts.URL)

	dialer := &ctxDialer{ctx: ctx, dialer: net.Dialer{Timeout: opts.ConnectTimeout}}
	natsOpts := []nats.Option{
		nats.Name(opts.Name),
		nats.Timeout(opts.ConnectTimeout),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(opts.ReconnectWait),
		nats.SetCustomDialer(dialer),
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			m.incDisconnect()
			if err != nil {
				log.Warn("NATS connection lost", "server", nc.ConnectedUrlRedacted(), "err", err)
			} else {
				log.Info("NATS connection lost", "server", nc.ConnectedUrlRedacted())
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			m.incReconnect()
			log.Info("NATS reconnected", "server", nc.ConnectedUrlRedacted(), "server_name", nc.ConnectedServerName())
		}),
		nats.ReconnectErrHandler(func(nc *nats.Conn, err error) {
			log.Debug("NATS reconnect attempt failed", "err", err)
		}),
		nats.ClosedHandler(func(nc *nats.Conn) {
			if err := nc.LastError(); err != nil {
				log.Warn("NATS connection closed", "err", err)
			} else {
				log.Info("NATS connection closed")
			}
		}),
		nats.ErrorHandler(func(nc *nats.Conn, sub *nats.Subscription, err error) {
			m.incAsyncError()
			if sub != nil {
				log.Warn("NATS asynchronous error", "subject", sub.Subject, "err", err)
			} else {
				log.Warn("NATS asynchronous error", "err", err)
			}
		}),
	}
	if opts.ReconnectBufSize != 0 {
		natsOpts = append(natsOpts, nats.ReconnectBufSize(opts.ReconnectBufSize))
	}
	switch {
	case opts.CredsFile != "":
		natsOpts = append(natsOpts, nats.UserCredentials(opts.CredsFile))
	case opts.NKeySeedFile != "":
		o, err := nats.NkeyOptionFromSeed(opts.NKeySeedFile)
		if err != nil {
			return nil, fmt.Errorf("connect to NATS: read NKey seed file %s: %w", opts.NKeySeedFile, err)
		}
		natsOpts = append(natsOpts, o)
	case opts.User != "":
		natsOpts = append(natsOpts, nats.UserInfo(opts.User, opts.Password))
	case opts.Token != "":
		natsOpts = append(natsOpts, nats.Token(opts.Token))
	}
	if opts.CAFile != "" {
		natsOpts = append(natsOpts, nats.RootCAs(opts.CAFile))
	}
	if opts.CertFile != "" {
		natsOpts = append(natsOpts, nats.ClientCert(opts.CertFile, opts.KeyFile))
	}

	nc, err := nats.Connect(opts.URL, natsOpts...)
	dialer.detach()
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, fmt.Errorf("connect to NATS at %s: %w", servers, ctxErr)
		}
		if isAuthError(err) {
			return nil, fmt.Errorf("connect to NATS at %s: %w: %w", servers, ErrAuthorization, err)
		}
		return nil, fmt.Errorf("connect to NATS at %s: %w", servers, err)
	}
	_, tlsErr := nc.TLSConnectionState()
	log.Info("NATS connected", "server", nc.ConnectedUrlRedacted(), "server_name", nc.ConnectedServerName(), "tls", tlsErr == nil)
	if secret := plaintextSecret(opts, nc.ConnectedUrl(), tlsErr == nil); secret != "" {
		log.Warn("NATS "+secret+" sent unencrypted to a server that is not on this host: set "+SettingNATSCA+
			" (or use tls:// URLs in "+SettingNATSURL+") so that the connection is encrypted",
			"server", nc.ConnectedUrlRedacted())
	}
	return nc, nil
}

// The settings the unencrypted-credentials warning names: the CA that turns
// TLS on, and the server URLs that may ask for it with tls://.
const (
	SettingNATSCA  = "BRIDGE_NATS_CA"
	SettingNATSURL = "BRIDGE_NATS_URL"
)

// plaintextSecret names the secret ("password" or "token") a connection to
// connectedURL sent in the clear, or returns "" when it sent none: the
// connection uses TLS, the server is on the loopback interface, or the
// authentication (NKey, credentials file) never sends a secret.
func plaintextSecret(opts ConnOptions, connectedURL string, tlsUsed bool) string {
	if tlsUsed {
		return ""
	}
	server, err := url.Parse(connectedURL)
	if err != nil || isLoopback(server.Hostname()) {
		return ""
	}
	switch {
	case opts.CredsFile != "" || opts.NKeySeedFile != "":
		return ""
	case opts.Password != "":
		return "password"
	case opts.Token != "":
		return "token"
	}
	// Credentials in a server URL (nats://user:password@host, nats://token@host).
	for _, u := range append([]string{connectedURL}, strings.Split(opts.URL, ",")...) {
		parsed, err := url.Parse(strings.TrimSpace(u))
		if err != nil || parsed.User == nil {
			continue
		}
		if _, ok := parsed.User.Password(); ok {
			return "password"
		}
		if parsed.User.Username() != "" {
			return "token"
		}
	}
	return ""
}

// isLoopback reports whether host names this machine's loopback interface.
func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func isAuthError(err error) bool {
	if errors.Is(err, nats.ErrAuthorization) || errors.Is(err, nats.ErrAuthExpired) || errors.Is(err, nats.ErrAuthRevoked) ||
		errors.Is(err, nats.ErrAccountAuthExpired) {
		return true
	}
	return strings.Contains(strings.ToLower(err.Error()), "authorization violation")
}

// ConnectRetry is Connect, retrying with backoff (logged at warn) while no
// server can be reached, until ctx ends. Any other failure (credentials the
// servers refuse, a TLS or file problem) ends it at once with the error:
// retrying would only hide it.
func ConnectRetry(ctx context.Context, opts ConnOptions) (*nats.Conn, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	b := backoff.NewExponentialBackOff()
	b.InitialInterval, b.MaxInterval, b.MaxElapsedTime = 500*time.Millisecond, 30*time.Second, 0
	for attempt := 1; ; attempt++ {
		nc, err := Connect(ctx, opts)
		if err == nil {
			return nc, nil
		}
		var netErr net.Error
		unreachable := errors.Is(err, nats.ErrNoServers) || errors.As(err, &netErr)
		if !unreachable || errors.Is(err, ErrAuthorization) || ctx.Err() != nil {
			return nil, err
		}
		wait := b.NextBackOff()
		log.Warn("NATS unreachable; retrying", "attempt", attempt, "retry_in", wait.Round(time.Millisecond), "err", err)
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("connect to NATS: %w", ctx.Err())
		case <-time.After(wait):
		}
	}
}
