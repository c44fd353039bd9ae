package embeddednats_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ccaas/presence-bridge/internal/embeddednats"
)

func TestStartServesJetStreamAndRestartsOnSameStore(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dir := t.TempDir()

	srv, err := embeddednats.Start(ctx, embeddednats.Options{Listen: "127.0.0.1:-1", DataDir: dir})
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	addr := srv.Addr()
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}}); err != nil {
		t.Fatalf("create stream: %v", err)
	}
	if _, err := js.Publish(ctx, "t.a", []byte("x")); err != nil {
		t.Fatalf("publish: %v", err)
	}
	nc.Close()
	srv.Shutdown()

	srv2, err := embeddednats.Start(ctx, embeddednats.Options{Listen: addr, DataDir: dir})
	if err != nil {
		t.Fatalf("restart: %v", err)
	}
	defer srv2.Shutdown()
	if srv2.Addr() != addr {
		t.Fatalf("restarted on %s, want %s", srv2.Addr(), addr)
	}
	nc2, err := nats.Connect(srv2.ClientURL())
	if err != nil {
		t.Fatalf("reconnect: %v", err)
	}
	defer nc2.Close()
	js2, _ := jetstream.New(nc2)
	st, err := js2.Stream(ctx, "T")
	if err != nil {
		t.Fatalf("stream after restart: %v", err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatalf("stream info: %v", err)
	}
	if info.State.Msgs != 1 {
		t.Fatalf("messages after restart = %d, want 1", info.State.Msgs)
	}
}

func TestStartRejectsBadOptions(t *testing.T) {
	tests := []struct {
		name string
		opts embeddednats.Options
	}{
		{"no data dir", embeddednats.Options{Listen: "127.0.0.1:-1"}},
		{"no port", embeddednats.Options{Listen: "127.0.0.1", DataDir: "x"}},
		{"port out of range", embeddednats.Options{Listen: "127.0.0.1:70000", DataDir: "x"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.opts.DataDir != "" {
				tt.opts.DataDir = t.TempDir()
			}
			srv, err := embeddednats.Start(context.Background(), tt.opts)
			if err == nil {
				srv.Shutdown()
				t.Fatal("Start succeeded, want error")
			}
		})
	}
}
