package ops_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ccaas/presence-bridge/internal/ops"
)

// The operator HTTP server as cmd/bridge wires it: built first on the
// bridge's private registry, served until the last step of shutdown, with a
// readiness check for each dependency and a heartbeat for each loop. In the
// bridge the checks are ops.NATSCheck(nc), a "jetstream" Flag,
// ops.StreamCheck(js, cfg.Stream) and, as an active check, the source's
// readiness; here two flags stand in for them.
func Example() {
	ctx := context.Background()
	logger := slog.New(slog.DiscardHandler)
	reg := prometheus.NewRegistry()

	srv, err := ops.New(ops.Options{Registry: reg, Version: "v1.2.3", Logger: logger})
	if err != nil {
		log.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0") // BRIDGE_HTTP_ADDR
	if err != nil {
		log.Fatal(err)
	}
	httpDone := make(chan struct{})
	go func() {
		defer close(httpDone)
		// Not ctx: the server outlives the signal until shutdown stops it.
		if err := srv.Serve(context.WithoutCancel(ctx), ln); err != nil {
			log.Print(err)
		}
	}()

	jsReady := ops.NewFlag("jetstream", "jetstream: starting")
	srv.AddCheck(jsReady)
	source := ops.NewFlag("source", "no poll answered yet")
	srv.AddActiveCheck(source) // skipped in standby
	pollBeat := srv.Heartbeat("poller", 10*time.Second)

	readyz := func() {
		resp, err := http.Get("http://" + ln.Addr().String() + "/readyz")
		if err != nil {
			log.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("%d %s", resp.StatusCode, body)
	}
	readyz()

	jsReady.Set(true, "") // the start steps are done
	pollBeat.Beat()       // the poller beats its heartbeat each time round
	srv.SetStandby(true, "standby: another replica holds the lease of every shard (1)")
	readyz()

	srv.SetStandby(false, "") // this replica took a shard
	source.Set(true, "")
	readyz()

	// The last step of shutdown, bounded by what is left of its budget.
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Fatal(err)
	}
	<-httpDone
	// Output:
	// 503 {"status":"not_ready","checks":{"jetstream":{"ok":false,"reason":"jetstream: starting"},"source":{"ok":false,"reason":"no poll answered yet"}}}
	// 200 {"status":"standby","reason":"standby: another replica holds the lease of every shard (1)","checks":{"jetstream":{"ok":true},"source":{"ok":true,"reason":"standby","skipped":true}}}
	// 200 {"status":"ready","checks":{"jetstream":{"ok":true},"source":{"ok":true}}}
}
