package natstest

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
)

// Where FreePorts draws from: from lowestFreePort up to the start of the
// kernel's ephemeral port range (defaultEphemeralLow where it cannot be
// read).
const (
	lowestFreePort      = 10000
	defaultEphemeralLow = 32768
	ephemeralRangeFile  = "/proc/sys/net/ipv4/ip_local_port_range"
)

// FreePorts returns n distinct loopback TCP ports nothing listens on now,
// for servers a test starts later (cluster routes, a node started midway, a
// child process's listen address). They are drawn below the kernel's
// ephemeral port range: a port probed free inside that range can be handed
// to another socket (any process's outgoing connection, a listener on port
// 0) before the server binds it, as happens when two test suites load one
// machine; below it only another explicit bind can take it.
func FreePorts(t testing.TB, n int) []int {
	t.Helper()
	high := ephemeralLow()
	ports := make([]int, 0, n)
	seen := map[int]bool{}
	for attempts := 0; len(ports) < n; attempts++ {
		if attempts == 10_000 {
			t.Fatalf("no %d free loopback ports between %d and %d", n, lowestFreePort, high)
		}
		p := lowestFreePort + rand.IntN(high-lowestFreePort)
		if seen[p] {
			continue
		}
		seen[p] = true
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue // in use
		}
		l.Close()
		ports = append(ports, p)
	}
	return ports
}

// FreeAddr returns a loopback address from FreePorts.
func FreeAddr(t testing.TB) string {
	t.Helper()
	return fmt.Sprintf("127.0.0.1:%d", FreePorts(t, 1)[0])
}

// ephemeralLow is the first port of the kernel's ephemeral range, or
// defaultEphemeralLow when it cannot be read or leaves too little below it.
func ephemeralLow() int {
	b, err := os.ReadFile(ephemeralRangeFile)
	if err != nil {
		return defaultEphemeralLow
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return defaultEphemeralLow
	}
	low, err := strconv.Atoi(f[0])
	if err != nil || low < lowestFreePort+1000 {
		return defaultEphemeralLow
	}
	return low
}
