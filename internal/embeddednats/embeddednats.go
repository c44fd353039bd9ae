// Package embeddednats runs an in-process nats-server with JetStream, used by
// the bridge when no NATS URL is configured and by tests that need a real
// server.
//
// Start it with [Start], connect to [Server.ClientURL], and stop it with
// [Server.Shutdown]:
//
//	srv, err := embeddednats.Start(ctx, embeddednats.Options{DataDir: "./data", Logger: log})
//	if err != nil { ... }
//	defer srv.Shutdown()
//	nc, err := nats.Connect(srv.ClientURL())
//
// Start refuses a listen address in use at once, and a data directory another
// process uses (see [LockDataDir]): the directory stays locked until
// Shutdown.
//
// Options.Configure lets a caller adjust the nats-server options before the
// server starts (authentication, TLS, clustering); the bridge leaves it nil.
package embeddednats

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Defaults applied by [Start] to zero fields of [Options].
const (
	// DefaultListen is where the server listens for clients.
	DefaultListen = "127.0.0.1:4222"
	// DefaultReadyTimeout bounds the wait for the server to accept clients.
	DefaultReadyTimeout = 10 * time.Second
)

// Options configure the embedded server.
type Options struct {
	// Listen is the client address as host:port; default DefaultListen.
	// Port -1 picks a free port (tests).
	Listen string
	// DataDir holds the JetStream file store (the server keeps it in
	// DataDir/jetstream); required.
	DataDir string
	// ServerName names the server; default "bridge-embedded". Cluster members
	// need distinct names.
	ServerName string
	// ReadyTimeout bounds the wait for the server to accept clients; default
	// DefaultReadyTimeout.
	ReadyTimeout time.Duration
	// Logger receives the server's log lines; default discards them.
	Logger *slog.Logger
	// Debug forwards the server's debug lines to Logger at debug level.
	Debug bool
	// Configure, when set, may change the nats-server options after this
	// package filled them and before the server starts: authentication, TLS,
	// cluster routes, limits.
	Configure func(*server.Options) error
}

// Server is a running embedded nats-server.
type Server struct {
	srv  *server.Server
	log  *slog.Logger
	lock *DirLock
}

// Start starts the server and waits until it accepts clients or ctx ends.
func Start(ctx context.Context, opts Options) (*Server, error) {
	if opts.DataDir == "" {
		return nil, errors.New("start embedded nats: data dir is required")
	}
	if opts.Listen == "" {
		opts.Listen = DefaultListen
	}
	if opts.ServerName == "" {
		opts.ServerName = "bridge-embedded"
	}
	if opts.ReadyTimeout <= 0 {
		opts.ReadyTimeout = DefaultReadyTimeout
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	host, portText, err := net.SplitHostPort(opts.Listen)
	if err != nil {
		return nil, fmt.Errorf("start embedded nats: parse listen address %q: %w", opts.Listen, err)
	}
	port, err := strconv.Atoi(portText)
	if err != nil || port < -1 || port > 65535 {
		return nil, fmt.Errorf("start embedded nats: listen address %q: port must be -1..65535", opts.Listen)
	}
	// Refuse at once an address another process holds: nats-server would
	// only log it and never become ready.
	if err := CheckListen(opts.Listen); err != nil {
		return nil, fmt.Errorf("start embedded nats: listen on %s: %w", opts.Listen, err)
	}
	// One process per store: a second server on the same files would
	// corrupt them.
	lock, err := LockDataDir(opts.DataDir)
	if err != nil {
		return nil, fmt.Errorf("start embedded nats: %w", err)
	}
	started := false
	defer func() {
		if !started {
			lock.Release()
		}
	}()
	sopts := &server.Options{
		ServerName: opts.ServerName,
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   opts.DataDir,
		NoSigs:     true,
		// The bridge publishes CloudEvents of a few hundred bytes; keep the
		// server's default limits otherwise.
	}
	if opts.Configure != nil {
		if err := opts.Configure(sopts); err != nil {
			return nil, fmt.Errorf("start embedded nats: configure: %w", err)
		}
	}
	srv, err := server.NewServer(sopts)
	if err != nil {
		return nil, fmt.Errorf("start embedded nats: %w", err)
	}
	srv.SetLoggerV2(&slogAdapter{log: log.With("component", "nats-server")}, opts.Debug, false, false)
	srv.Start()

	deadline := time.Now().Add(opts.ReadyTimeout)
	for !srv.ReadyForConnections(100 * time.Millisecond) {
		if err := ctx.Err(); err != nil {
			srv.Shutdown()
			srv.WaitForShutdown()
			return nil, fmt.Errorf("start embedded nats: wait for ready: %w", err)
		}
		if time.Now().After(deadline) {
			srv.Shutdown()
			srv.WaitForShutdown()
			return nil, fmt.Errorf("start embedded nats on %s: not ready after %s", opts.Listen, opts.ReadyTimeout)
		}
	}
	started = true
	s := &Server{srv: srv, log: log, lock: lock}
	log.Info("embedded NATS server listening", "url", srv.ClientURL(), "store_dir", filepath.Join(sopts.StoreDir, "jetstream"))
	return s, nil
}

// ClientURL is the URL clients connect to, e.g. nats://127.0.0.1:4222.
func (s *Server) ClientURL() string { return s.srv.ClientURL() }

// Addr is the host:port the server listens on for clients.
func (s *Server) Addr() string {
	if a, ok := s.srv.Addr().(*net.TCPAddr); ok {
		return a.String()
	}
	return s.srv.Addr().String()
}

// NATS returns the underlying nats-server, for test support (natstest) that
// inspects JetStream or cluster state.
func (s *Server) NATS() *server.Server { return s.srv }

// Shutdown stops the server and waits until it has exited.
func (s *Server) Shutdown() {
	s.srv.Shutdown()
	s.srv.WaitForShutdown()
	s.lock.Release()
	s.log.Info("embedded NATS server stopped")
}

// slogAdapter forwards nats-server log lines to slog.
type slogAdapter struct {
	log *slog.Logger
}

var _ server.Logger = (*slogAdapter)(nil)

func (a *slogAdapter) Noticef(format string, v ...any) { a.log.Debug(fmt.Sprintf(format, v...)) }
func (a *slogAdapter) Warnf(format string, v ...any)   { a.log.Warn(fmt.Sprintf(format, v...)) }
func (a *slogAdapter) Fatalf(format string, v ...any)  { a.log.Error(fmt.Sprintf(format, v...)) }
func (a *slogAdapter) Errorf(format string, v ...any)  { a.log.Error(fmt.Sprintf(format, v...)) }
func (a *slogAdapter) Debugf(format string, v ...any)  { a.log.Debug(fmt.Sprintf(format, v...)) }
func (a *slogAdapter) Tracef(format string, v ...any)  { a.log.Debug(fmt.Sprintf(format, v...)) }
