package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/ccaas/presence-bridge/internal/config"
	"github.com/ccaas/presence-bridge/internal/embeddednats"
)

// listenAddr is an address a command is about to listen on and the
// variable or flag that sets it.
type listenAddr struct {
	addr, setBy string
}

// localAddrs lists the addresses cfg makes the bridge listen on: the
// operator HTTP server and, without BRIDGE_NATS_URL, the embedded NATS
// server.
func localAddrs(cfg config.Config) []listenAddr {
	var out []listenAddr
	if cfg.Embedded() {
		out = append(out, listenAddr{cfg.EmbeddedNATSListen, "BRIDGE_EMBEDDED_NATS_LISTEN"})
	}
	if cfg.HTTPAddr != "" {
		out = append(out, listenAddr{cfg.HTTPAddr, "BRIDGE_HTTP_ADDR"})
	}
	return out
}

// bridgeRunning is what most often holds the bridge's addresses and data
// directory.
const bridgeRunning = "another `bridge demo` running?"

// preflight refuses, before anything starts or is printed, an address that
// another process listens on and a data directory (dataDir, when not empty)
// that another process uses. It writes one line per problem to stderr,
// naming the address or directory, what sets it and the likely cause, and
// reports false: the caller exits with exitConfig.
func preflight(stderr io.Writer, cmd, likelyCause string, addrs []listenAddr, dataDir string) bool {
	var problems []string
	for _, a := range addrs {
		err := embeddednats.CheckListen(a.addr)
		switch {
		case err == nil:
		case embeddednats.AddrInUse(err):
			problems = append(problems, fmt.Sprintf("%s is already in use (%s): %s Stop it, or set %s to a free address.", a.addr, a.setBy, likelyCause, a.setBy))
		default:
			problems = append(problems, fmt.Sprintf("cannot listen on %s (%s): %v", a.addr, a.setBy, err))
		}
	}
	if dataDir != "" {
		lock, err := embeddednats.LockDataDir(dataDir)
		var locked *embeddednats.LockedError
		switch {
		case errors.As(err, &locked):
			holder := "another process"
			if locked.PID > 0 {
				holder = fmt.Sprintf("process %d", locked.PID)
			}
			problems = append(problems, fmt.Sprintf("data directory %s (BRIDGE_DATA_DIR) is in use by %s: %s Stop it, or set BRIDGE_DATA_DIR to another directory.", locked.Dir, holder, likelyCause))
		case err != nil:
			problems = append(problems, fmt.Sprintf("BRIDGE_DATA_DIR: %v", err))
		default:
			// Free: the embedded server takes the lock again when it
			// starts, and holds it until it stops.
			lock.Release()
		}
	}
	if len(problems) == 0 {
		return true
	}
	fmt.Fprintf(stderr, "bridge %s: cannot start, nothing was started:\n", cmd)
	for _, p := range problems {
		fmt.Fprintln(stderr, "  "+p)
	}
	return false
}

// embeddedDataDir is the data directory of the embedded NATS server, or ""
// when the bridge uses BRIDGE_NATS_URL.
func embeddedDataDir(cfg config.Config) string {
	if cfg.Embedded() {
		return cfg.DataDir
	}
	return ""
}
