package main

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/ccaas/presence-bridge/internal/natstest"
	"github.com/ccaas/presence-bridge/internal/testwait"
)

// TestStartsBeforeNATSIsReachable: a bridge started while its NATS servers
// are down waits for them (not ready, with the reason), then connects and
// publishes every agent once they come up.
func TestStartsBeforeNATSIsReachable(t *testing.T) {
	h := newHarness(t, 4, 13)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // a free port nobody listens on yet

	p := h.start(h.env(map[string]string{"BRIDGE_NATS_URL": "nats://" + addr}), "run")
	ops := opsAddr(t, p)
	testwait.Until(t, waitScale*20*time.Second, "not ready while NATS is unreachable", func() bool {
		body := scrape(ops, "/readyz")
		return strings.Contains(body, `"status":"not_ready"`) && strings.Contains(body, `"reason":"connecting"`)
	})
	testwait.Until(t, waitScale*20*time.Second, "a retry logged", func() bool { return strings.Contains(p.output(), "NATS unreachable; retrying") })

	ns := natstest.Start(t, natstest.WithListen(addr))
	nc, js := natstest.Connect(t, ns.ClientURL())
	late := &harness{t: t, ns: ns, nc: nc, js: js, sim: h.sim, simURL: h.simURL, val: h.val}
	c := late.collect(ctx)
	testwait.Until(t, waitScale*60*time.Second, "every agent published once NATS is up", func() bool { return late.caughtUp(c) })
	testwait.Until(t, waitScale*20*time.Second, "ready", func() bool { return strings.Contains(scrape(ops, "/readyz"), `"status":"ready"`) })
}
