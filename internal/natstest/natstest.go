// Package natstest starts in-process JetStream servers for tests, as
// net/http/httptest starts HTTP servers: on a free loopback port, with a
// temporary store, shut down when the test ends. Options say what differs
// (store, address, server log, authentication, limits, clustering); Stop and
// Restart bring a server down and back on the same address and store, as a
// crash or an upgrade would. It is the one way the module's tests start a
// NATS server; the standalone examples keep their own (they use public
// libraries only).
package natstest

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ccaas/presence-bridge/internal/embeddednats"
)

// StartTimeout bounds the wait for a server to accept clients.
const StartTimeout = 30 * time.Second

// Option changes how Start runs the server.
type Option func(*embeddednats.Options)

// WithDataDir keeps the JetStream store in dir instead of a temporary
// directory of the test.
func WithDataDir(dir string) Option { return func(o *embeddednats.Options) { o.DataDir = dir } }

// WithListen listens on addr (host:port) instead of a free loopback port.
func WithListen(addr string) Option { return func(o *embeddednats.Options) { o.Listen = addr } }

// WithLogger sends the server's log lines to log.
func WithLogger(log *slog.Logger) Option { return func(o *embeddednats.Options) { o.Logger = log } }

// WithServerName names the server (cluster members need distinct names).
func WithServerName(name string) Option {
	return func(o *embeddednats.Options) { o.ServerName = name }
}

// WithConfigure changes the nats-server options before the server starts:
// users, limits such as max_payload, cluster routes. Several compose in
// order.
func WithConfigure(configure func(*server.Options) error) Option {
	return func(o *embeddednats.Options) {
		prev := o.Configure
		o.Configure = func(so *server.Options) error {
			if prev != nil {
				if err := prev(so); err != nil {
					return err
				}
			}
			return configure(so)
		}
	}
}

// WithUser makes the server require user and password of every client.
func WithUser(user, password string) Option {
	return WithConfigure(func(so *server.Options) error {
		so.Username, so.Password = user, password
		return nil
	})
}

// Server is a JetStream server of one test. Its methods are safe for
// concurrent use.
type Server struct {
	t    testing.TB
	opts embeddednats.Options // Listen is the address the server got

	mu  sync.Mutex
	cur *embeddednats.Server // nil while stopped
}

// Start runs a JetStream server for the test; it is shut down at cleanup.
func Start(t testing.TB, opts ...Option) *Server {
	t.Helper()
	// A port below the ephemeral range: Restart binds it again after Stop,
	// when a port the kernel hands out could have gone to another socket.
	o := embeddednats.Options{Listen: FreeAddr(t)}
	for _, opt := range opts {
		opt(&o)
	}
	if o.DataDir == "" {
		o.DataDir = t.TempDir()
	}
	s := &Server{t: t, opts: o}
	s.cur = s.start()
	s.opts.Listen = s.cur.Addr()
	t.Cleanup(s.Stop)
	return s
}

func (s *Server) start() *embeddednats.Server {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), StartTimeout)
	defer cancel()
	srv, err := embeddednats.Start(ctx, s.opts)
	if err != nil {
		s.t.Fatalf("start nats-server on %s: %v", s.opts.Listen, err)
	}
	return srv
}

// running returns the running server, failing the test when it is stopped.
func (s *Server) running() *embeddednats.Server {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur == nil {
		s.t.Fatal("nats-server is stopped")
	}
	return s.cur
}

// ClientURL is the URL clients connect to; it stays the same across
// Restart.
func (s *Server) ClientURL() string { return "nats://" + s.opts.Listen }

// Addr is the host:port the server listens on; it stays the same across
// Restart.
func (s *Server) Addr() string { return s.opts.Listen }

// DataDir is the directory of the server's store.
func (s *Server) DataDir() string { return s.opts.DataDir }

// NATS returns the running nats-server, for tests that inspect its state.
func (s *Server) NATS() *server.Server { return s.running().NATS() }

// Stop shuts the server down and waits until it has exited; it does nothing
// when the server is stopped already.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur != nil {
		s.cur.Shutdown()
		s.cur = nil
	}
}

// Restart stops the server if it runs and starts it again on the same
// address with the same store.
func (s *Server) Restart() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur != nil {
		s.cur.Shutdown()
		s.cur = nil
	}
	s.cur = s.start()
}

// Connect connects to url for the test with opts; the connection is closed
// at cleanup.
func Connect(t testing.TB, url string, opts ...nats.Option) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		t.Fatalf("connect to nats: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	return nc, js
}

// JetStream starts a server and returns a JetStream client connected to it.
func JetStream(t testing.TB) jetstream.JetStream {
	t.Helper()
	_, js := Connect(t, Start(t).ClientURL())
	return js
}
