package lease_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ccaas/presence-bridge/internal/contract"
	"github.com/ccaas/presence-bridge/internal/natstest"
	"github.com/ccaas/presence-bridge/internal/testwait"
)

// proxy is a TCP proxy between one client and a NATS server that the test
// can cut: while cut it closes every connection it has and every new one at
// once, as a network partition or a dead server looks to the client.
type proxy struct {
	ln       net.Listener
	upstream string
	cut      atomic.Bool

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

func startProxy(t *testing.T, upstream string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("proxy listen: %v", err)
	}
	p := &proxy{ln: ln, upstream: upstream, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() {
		ln.Close()
		p.closeAll()
		p.wg.Wait()
	})
	return p
}

func (p *proxy) url() string { return "nats://" + p.ln.Addr().String() }

func (p *proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		if p.cut.Load() {
			c.Close()
			continue
		}
		u, err := net.Dial("tcp", p.upstream)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns[c], p.conns[u] = struct{}{}, struct{}{}
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(c, u)
		go p.pipe(u, c)
	}
}

func (p *proxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	_, _ = io.Copy(dst, src)
	dst.Close()
	src.Close()
}

func (p *proxy) closeAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
		delete(p.conns, c)
	}
}

// setCut cuts the client off (true) or lets it reconnect (false).
func (p *proxy) setCut(cut bool) {
	p.cut.Store(cut)
	if cut {
		p.closeAll()
	}
}

// reconnecting connects to url and reconnects quickly and forever, as the
// bridge's connection does.
func reconnecting(t *testing.T, url string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond),
		nats.ReconnectJitter(0, 0), nats.Timeout(time.Second))
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// shardWrites follows the key of shard 0 and keeps each write's instance
// and time, in order.
type shardWrites struct {
	mu     sync.Mutex
	writes []shardWrite
}

type shardWrite struct {
	instance string
	written  time.Time // as the writer recorded it
}

// watchShardWrites follows the shard key on js until the test ends.
func watchShardWrites(t *testing.T, js jetstream.JetStream) (*shardWrites, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, contract.LeaseBucket)
	if err != nil {
		return nil, fmt.Errorf("open bucket: %w", err)
	}
	w, err := kv.Watch(t.Context(), "shard.0")
	if err != nil {
		return nil, fmt.Errorf("watch: %w", err)
	}
	sw := &shardWrites{}
	go func() {
		for e := range w.Updates() {
			if e == nil || e.Operation() != jetstream.KeyValuePut {
				continue
			}
			var rec struct {
				Instance string    `json:"instance"`
				Written  time.Time `json:"written"`
			}
			if json.Unmarshal(e.Value(), &rec) == nil {
				sw.mu.Lock()
				sw.writes = append(sw.writes, shardWrite{rec.Instance, rec.Written})
				sw.mu.Unlock()
			}
		}
	}()
	return sw, nil
}

// last returns the last write seen.
func (s *shardWrites) last() shardWrite {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.writes) == 0 {
		return shardWrite{}
	}
	return s.writes[len(s.writes)-1]
}

// count returns how many writes by instance were seen.
func (s *shardWrites) count(instance string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, w := range s.writes {
		if w.instance == instance {
			n++
		}
	}
	return n
}

// TestHolderCutOffFromNATSKeepsLeading: a holder that cannot reach NATS for
// several TTLs keeps its shard and its Leading context. When NATS answers
// again it renews if nobody took the shard over, and steps down if another
// process did while it was away.
func TestHolderCutOffFromNATSKeepsLeading(t *testing.T) {
	const outage = 3 * testTTL
	tests := []struct {
		name string
		// cut makes NATS unreachable for a; restore ends that.
		cut, restore func(t *testing.T, e *cutEnv)
		standby      bool // a second contender, b, runs on its own connection
	}{
		{
			name:    "server stopped and restarted, nobody else",
			cut:     func(t *testing.T, e *cutEnv) { e.srv.Stop() },
			restore: func(t *testing.T, e *cutEnv) { e.restartServer(t) },
		},
		{
			name:    "partitioned, nobody else",
			cut:     func(t *testing.T, e *cutEnv) { e.proxy.setCut(true) },
			restore: func(t *testing.T, e *cutEnv) { e.proxy.setCut(false) },
		},
		{
			name:    "partitioned while a standby takes over",
			cut:     func(t *testing.T, e *cutEnv) { e.proxy.setCut(true) },
			restore: func(t *testing.T, e *cutEnv) { e.proxy.setCut(false) },
			standby: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newCutEnv(t)
			rec := &recorder{}
			a := startContenderOn(t, reconnecting(t, e.proxy.url()), "a", 1, rec.leading("a"))
			testwait.Until(t, 3*testTTL, "a to lead", func() bool { return a.set.IsLeader(0) })
			var b *contender
			if tt.standby {
				b = startContenderOn(t, reconnecting(t, e.srv.ClientURL()), "b", 1, rec.leading("b"))
			}
			// Give b time to see a's lease, so that it takes over by expiry.
			testwait.Until(t, 3*testTTL, "a renewal", func() bool { return e.writes().count("a") >= 2 })

			tt.cut(t, e)
			cutAt := time.Now()
			testwait.Until(t, 5*time.Second, "a to notice the outage", func() bool { return !a.nc.IsConnected() })
			if tt.standby {
				testwait.Until(t, 3*testTTL, "b to take over", func() bool { return b.set.IsLeader(0) })
			}
			// a keeps leading through the whole outage.
			for time.Since(cutAt) < outage {
				if !a.set.IsLeader(0) || !rec.snapshot()[0].end.IsZero() {
					t.Fatalf("a stopped leading %s into the outage:\n%s", time.Since(cutAt).Round(time.Millisecond), a.logs)
				}
				time.Sleep(20 * time.Millisecond)
			}
			if a.nc.IsConnected() {
				t.Fatal("a reconnected during the outage: the cut did not hold")
			}

			restoredAt := time.Now()
			tt.restore(t, e)
			testwait.Until(t, 10*time.Second, "a to reconnect", a.nc.IsConnected)
			if !tt.standby {
				testwait.Until(t, 3*testTTL, "a to renew after the outage", func() bool {
					w := e.writes().last()
					return w.instance == "a" && w.written.After(restoredAt)
				})
				if !a.set.IsLeader(0) {
					t.Fatalf("a lost the shard nobody took:\n%s", a.logs)
				}
				if ivs := rec.snapshot(); len(ivs) != 1 || !ivs[0].end.IsZero() {
					t.Errorf("leading intervals = %+v, want a single one still open", ivs)
				}
				if strings.Contains(a.logs.String(), "lost shard lease") {
					t.Errorf("a logged a loss:\n%s", a.logs)
				}
				return
			}
			testwait.Until(t, 3*testTTL, "a to step down after seeing b", func() bool { return !a.set.IsLeader(0) })
			if logs := a.logs.String(); !strings.Contains(logs, "another process took the shard") {
				t.Errorf("a stepped down for another reason:\n%s", logs)
			}
			if !b.set.IsLeader(0) {
				t.Error("b lost the shard when a came back")
			}
			if w := e.writes().last(); w.instance != "b" {
				t.Errorf("the shard key names %q after a came back, want b", w.instance)
			}
			ivs := rec.snapshot()
			if len(ivs) != 2 || ivs[0].instance != "a" || ivs[1].instance != "b" || ivs[0].end.Sub(cutAt) < outage {
				t.Errorf("leading intervals = %+v, want a (until after the outage), then b", ivs)
			}
		})
	}
}

// cutEnv is a server, a proxy in front of it, and an observer on its own
// connection.
type cutEnv struct {
	srv   *natstest.Server
	addr  string
	proxy *proxy

	mu  sync.Mutex
	obs *shardWrites // observer of the running server
}

func newCutEnv(t *testing.T) *cutEnv {
	t.Helper()
	e := &cutEnv{srv: natstest.Start(t)}
	e.addr = e.srv.Addr()
	e.proxy = startProxy(t, e.addr)
	_, js := connect(t, e.srv.ClientURL())
	// The bucket exists before anybody watches it.
	kvCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.CreateKeyValue(kvCtx, jetstream.KeyValueConfig{Bucket: contract.LeaseBucket, History: 1}); err != nil {
		t.Fatalf("create bucket: %v", err)
	}
	obs, err := watchShardWrites(t, js)
	if err != nil {
		t.Fatal(err)
	}
	e.obs = obs
	return e
}

// restartServer starts the server again on its address and store, and
// follows the shard key from a new observer connection.
func (e *cutEnv) restartServer(t *testing.T) {
	t.Helper()
	e.srv.Restart()
	js, err := jetstream.New(reconnecting(t, e.srv.ClientURL()))
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	var obs *shardWrites
	testwait.Until(t, 10*time.Second, "the bucket after the restart", func() bool {
		obs, err = watchShardWrites(t, js)
		return err == nil
	})
	e.mu.Lock()
	e.obs = obs
	e.mu.Unlock()
}

func (e *cutEnv) writes() *shardWrites {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.obs
}
