package natstest

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestRestartKeepsAddressAndStore: a server stopped and started again
// listens on the same address with the same streams, and a client that
// reconnects finds them.
func TestRestartKeepsAddressAndStore(t *testing.T) {
	srv := Start(t)
	url := srv.ClientURL()
	_, js := Connect(t, url, nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond))
	if _, err := js.CreateStream(t.Context(), jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}}); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	srv.Stop() // stopping twice does nothing
	srv.Restart()
	if srv.ClientURL() != url {
		t.Errorf("client URL %s after the restart, want %s", srv.ClientURL(), url)
	}
	if _, err := js.Stream(t.Context(), "S"); err != nil {
		t.Errorf("stream after the restart: %v", err)
	}
}

// TestOptions: the options reach the server.
func TestOptions(t *testing.T) {
	dir := t.TempDir()
	srv := Start(t, WithDataDir(dir), WithServerName("n1"), WithUser("u", "p"),
		WithConfigure(func(o *server.Options) error { o.MaxPayload = 4096; return nil }))
	if srv.DataDir() != dir {
		t.Errorf("data dir %s, want %s", srv.DataDir(), dir)
	}
	if got := srv.NATS().Name(); got != "n1" {
		t.Errorf("server name %q, want n1", got)
	}
	if _, err := nats.Connect(srv.ClientURL()); err == nil {
		t.Error("a client without credentials was accepted")
	}
	nc, _ := Connect(t, srv.ClientURL(), nats.UserInfo("u", "p"))
	if got := nc.MaxPayload(); got != 4096 {
		t.Errorf("max payload %d, want 4096 (options composed in order)", got)
	}
}

// TestFreePortsAreBindableAndOutsideTheEphemeralRange: the ports are
// distinct, each can be bound, and none lies where the kernel hands out
// ports to other sockets.
func TestFreePortsAreBindableAndOutsideTheEphemeralRange(t *testing.T) {
	ports := FreePorts(t, 8)
	seen := map[int]bool{}
	for _, p := range ports {
		if seen[p] {
			t.Errorf("port %d returned twice", p)
		}
		seen[p] = true
		if p < 10000 || p >= ephemeralLow() {
			t.Errorf("port %d outside [10000, %d)", p, ephemeralLow())
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			t.Errorf("port %d: %v", p, err)
			continue
		}
		l.Close()
	}
}
