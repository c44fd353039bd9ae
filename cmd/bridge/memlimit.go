package main

import (
	"fmt"
	"log/slog"
	"math"
	"os"
	"strconv"

	"github.com/KimMachineGun/automemlimit/memlimit"
)

// memoryLimitRatio is the share of the container's memory limit the bridge
// gives Go's garbage collector as its soft limit (GOMEMLIMIT): the rest is
// headroom for what the collector does not count (thread stacks, the
// kernel's view of freed pages not yet returned).
const memoryLimitRatio = 0.9

// checkMemoryLimitEnv checks AUTOMEMLIMIT, the one variable of the memory
// limit the bridge reads besides Go's own GOMEMLIMIT: "off" or a ratio in
// (0, 1].
func checkMemoryLimitEnv() error {
	v, ok := os.LookupEnv("AUTOMEMLIMIT")
	if !ok || v == "off" {
		return nil
	}
	r, err := strconv.ParseFloat(v, 64)
	if err != nil || math.IsNaN(r) || r <= 0 || r > 1 {
		return fmt.Errorf(`AUTOMEMLIMIT: must be "off" or a ratio of the container's memory limit in (0, 1] (got %q)`, v)
	}
	return nil
}

// setMemoryLimit sets Go's soft memory limit to memoryLimitRatio (or
// AUTOMEMLIMIT) of the limit provider reports (memlimit.FromCgroup: the
// container's memory limit), unless GOMEMLIMIT is set or AUTOMEMLIMIT is
// "off". Without a limit, or when it cannot be read, Go's default (no soft
// limit) stays and the bridge runs on. It returns the limit in force.
func setMemoryLimit(log *slog.Logger, provider memlimit.Provider) int64 {
	limit, err := memlimit.Set(memlimit.WithRatio(memoryLimitRatio), memlimit.WithProvider(provider))
	switch {
	case err != nil:
		log.Warn("reading the container's memory limit failed; Go's default memory limit stays", "err", err)
	case os.Getenv("GOMEMLIMIT") != "":
		log.Info("memory limit from GOMEMLIMIT", "gomemlimit_bytes", limit)
	case limit == math.MaxInt64:
		log.Info("no container memory limit: Go's default garbage collection, no soft memory limit")
	default:
		log.Info("memory limit set from the container's", "gomemlimit_bytes", limit, "ratio", memoryLimitRatio)
	}
	return limit
}
