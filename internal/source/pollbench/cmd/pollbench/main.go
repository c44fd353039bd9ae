// Command pollbench measures the bridge's poll path against the simulator
// in a separate process, beside a bare net/http loop at the same rate:
//
//	go run ./internal/source/pollbench/cmd/pollbench -agents 10000 -interval 10s
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/ccaas/presence-bridge/internal/source/pollbench"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := pollbench.Main(ctx, nil, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "pollbench:", err)
		os.Exit(1)
	}
}
