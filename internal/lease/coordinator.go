// The coordinator: Set.Run, the watcher's view of the lease bucket, taking and
// releasing shards, and holding (renewing) each shard held.

package lease

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// observation is what this process last saw of one key, and since when.
type observation struct {
	present bool      // the key has a value (not absent, not deleted)
	rev     uint64    // revision of the value or of the delete marker
	since   time.Time // local time this revision was first seen
	rec     record
}

// view is the coordinator's picture of the bucket, fed by a watcher.
type view struct {
	keys map[string]*observation
	init time.Time // when the watcher delivered its initial values
}

func (v *view) apply(e jetstream.KeyValueEntry, now time.Time) {
	o, ok := v.keys[e.Key()]
	if ok && o.rev == e.Revision() {
		return
	}
	n := &observation{rev: e.Revision(), since: now}
	if e.Operation() == jetstream.KeyValuePut {
		if err := json.Unmarshal(e.Value(), &n.rec); err == nil {
			n.present = true
		}
	}
	v.keys[e.Key()] = n
}

// Run takes part in the election until ctx is done, then releases every shard
// it holds (after its Leading function has returned) and removes its member
// key. It returns nil after a normal shutdown and an error only when the
// bucket cannot be opened (see Open).
func (s *Set) Run(ctx context.Context) error {
	if err := s.Open(ctx); err != nil {
		return err
	}
	s.mu.Lock()
	kv := s.kv
	s.mu.Unlock()
	if m := s.opts.Metrics; m != nil {
		for k := range s.opts.Shards {
			m.leader.WithLabelValues(strconv.Itoa(k)).Set(0)
		}
	}
	s.changed()

	var wg sync.WaitGroup
	defer func() {
		s.mu.Lock()
		for _, h := range s.held {
			h.askRelease()
		}
		s.mu.Unlock()
		wg.Wait()
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.timing.ttl/3)
		defer cancel()
		if err := kv.Delete(cctx, s.memberKey()); err != nil {
			s.log.Debug("remove member key", "err", err)
		}
	}()

	c := &coordinator{s: s, kv: kv, wg: &wg, v: view{keys: make(map[string]*observation)}}
	for {
		err := c.watch(ctx)
		if ctx.Err() != nil {
			return nil
		}
		s.log.Warn("lease watcher ended, restarting", "err", err)
		t := time.NewTimer(s.timing.tick)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// coordinator is the single goroutine that watches the bucket and decides
// which shards to take or release.
type coordinator struct {
	s  *Set
	kv jetstream.KeyValue
	wg *sync.WaitGroup
	v  view

	lastMember        time.Time // last attempt to write the member key
	lastMemberHealthy bool
	lastRelease       time.Time
}

// watch follows the bucket and acts on every tick until ctx is done or the
// watcher breaks.
func (c *coordinator) watch(ctx context.Context) error {
	w, err := c.kv.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("watch lease bucket %s: %w", c.s.opts.Bucket, err)
	}
	defer w.Stop()
	started := time.Now()
	ticker := time.NewTicker(c.s.timing.tick)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("watcher closed")
			}
			now := time.Now()
			if e == nil {
				if c.v.init.IsZero() {
					c.v.init = now
				}
				c.step(ctx, now)
				continue
			}
			c.v.apply(e, now)
			c.noticeOtherHolder(e)
			if !c.v.init.IsZero() && e.Operation() != jetstream.KeyValuePut && strings.HasPrefix(e.Key(), shardPrefix) {
				// A released shard: decide now rather than at the next tick.
				c.step(ctx, now)
			}
		case now := <-ticker.C:
			if c.v.init.IsZero() {
				// Nothing is decided before the bucket's initial values
				// are in; a watcher that never says so is replaced.
				if now.Sub(started) >= c.s.timing.ttl {
					return fmt.Errorf("lease watcher gave no end of the initial values within %s", c.s.timing.ttl)
				}
				continue
			}
			c.step(ctx, now)
		}
	}
}

// noticeOtherHolder tells the holder of a shard this process holds that
// another process wrote the shard's key after this process took it: the
// shard was taken over (while this process could not renew, or was cut off
// from NATS), so this process steps down.
func (c *coordinator) noticeOtherHolder(e jetstream.KeyValueEntry) {
	k, ok := shardOfKey(e.Key())
	if !ok || e.Operation() != jetstream.KeyValuePut {
		return
	}
	c.s.mu.Lock()
	h := c.s.held[k]
	c.s.mu.Unlock()
	if h == nil || e.Revision() <= h.acquired {
		return
	}
	var rec record
	if err := json.Unmarshal(e.Value(), &rec); err != nil || rec.Session == c.s.session {
		return
	}
	c.s.log.Warn("another process holds a shard this process leads", "shard", k, "holder", rec.Instance, "revision", e.Revision())
	h.markLost()
}

// shardOfKey returns the shard of a "shard.<k>" key.
func shardOfKey(key string) (int, bool) {
	rest, ok := strings.CutPrefix(key, shardPrefix)
	if !ok {
		return 0, false
	}
	k, err := strconv.Atoi(rest)
	return k, err == nil
}

func (c *coordinator) expired(o *observation, now time.Time) bool {
	return o.present && now.Sub(o.since) >= c.s.timing.expireAfter
}

// freeSince returns whether a shard key is free and since when.
func (c *coordinator) freeSince(key string, now time.Time) (bool, time.Time) {
	o, ok := c.v.keys[key]
	switch {
	case !ok:
		return true, c.v.init
	case !o.present:
		return true, o.since
	case c.expired(o, now):
		return true, o.since.Add(c.s.timing.expireAfter)
	}
	return false, time.Time{}
}

// step refreshes this process's member key and takes or releases shards.
func (c *coordinator) step(ctx context.Context, now time.Time) {
	s := c.s
	healthy := s.healthy()
	if now.Sub(c.lastMember) >= s.timing.renewEvery || healthy != c.lastMemberHealthy {
		c.lastMember, c.lastMemberHealthy = now, healthy
		cctx, cancel := context.WithTimeout(ctx, s.timing.renewEvery)
		_, err := c.kv.Put(cctx, s.memberKey(), s.encode(nil, healthy))
		cancel()
		if err != nil {
			s.log.Warn("refresh lease member key", "err", err)
		}
	}
	if !healthy {
		return
	}

	// Live, healthy members and how many shards each holds.
	load := map[string]int{s.session: 0}
	for key, o := range c.v.keys {
		switch {
		case !strings.HasPrefix(key, memberPrefix) || !o.present:
		case c.expired(o, now):
			if now.Sub(o.since) >= 2*s.timing.ttl {
				c.removeDeadMember(ctx, key, o.rev)
			}
		case o.rec.Healthy:
			load[o.rec.Session] += 0
		}
	}
	for k := range s.opts.Shards {
		o, ok := c.v.keys[shardKey(k)]
		if ok && o.present && !c.expired(o, now) {
			if _, live := load[o.rec.Session]; live && o.rec.Session != s.session {
				load[o.rec.Session]++
			}
		}
	}
	mine := len(s.Held())
	load[s.session] = mine
	least := mine
	for _, n := range load {
		least = min(least, n)
	}
	fair := (s.opts.Shards + len(load) - 1) / len(load)

	if mine >= least+2 && now.Sub(c.lastRelease) >= s.timing.ttl {
		c.releaseOne()
		c.lastRelease = now
		return
	}

	start := int(hashString(s.session) % uint32(s.opts.Shards))
	for i := range s.opts.Shards {
		k := (start + i) % s.opts.Shards
		if s.IsLeader(k) || s.releasedRecently(k, now) {
			continue
		}
		free, since := c.freeSince(shardKey(k), now)
		if !free {
			continue
		}
		eager := mine < fair && mine <= least && now.Sub(c.lastRelease) >= s.timing.ttl
		if !eager && now.Sub(since) < s.timing.freeGrace {
			continue
		}
		if c.acquire(ctx, k) {
			mine++
		}
	}
}

func hashString(s string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(s))
	return h.Sum32()
}

func (c *coordinator) removeDeadMember(ctx context.Context, key string, rev uint64) {
	cctx, cancel := context.WithTimeout(ctx, c.s.timing.renewEvery)
	defer cancel()
	if err := c.kv.Delete(cctx, key, jetstream.LastRevision(rev)); err != nil {
		c.s.log.Debug("remove dead lease member", "key", key, "err", err)
	}
}

// releaseOne asks the holder of the highest shard held to release it.
func (c *coordinator) releaseOne() {
	held := c.s.Held()
	if len(held) == 0 {
		return
	}
	k := held[len(held)-1]
	c.s.log.Info("releasing shard to balance the load", "shard", k)
	c.s.mu.Lock()
	if h, ok := c.s.held[k]; ok {
		h.askRelease()
	}
	c.s.mu.Unlock()
}

// acquire tries to take shard k: Create when the key is free, Update on the
// observed revision when the lease expired. It reports success.
func (c *coordinator) acquire(ctx context.Context, k int) bool {
	s := c.s
	key := shardKey(k)
	cctx, cancel := context.WithTimeout(ctx, s.timing.renewEvery)
	defer cancel()
	value := s.encode(&k, true)
	var rev uint64
	var err error
	o, ok := c.v.keys[key]
	takeover := ok && o.present
	if takeover {
		rev, err = c.kv.Update(cctx, key, value, o.rev)
	} else {
		rev, err = c.kv.Create(cctx, key, value)
	}
	switch {
	case err == nil:
	case errors.Is(err, jetstream.ErrKeyExists), errors.Is(err, jetstream.ErrKeyRevisionMismatch):
		s.log.Debug("shard taken by another process first", "shard", k)
		return false
	default:
		s.log.Warn("acquire shard lease", "shard", k, "err", err)
		return false
	}
	if takeover {
		s.log.Info("took over expired shard lease", "shard", k, "previous", o.rec.Instance)
	} else {
		s.log.Info("acquired shard lease", "shard", k)
	}
	h := &holding{acquired: rev, release: make(chan struct{}), lost: make(chan struct{}), done: make(chan struct{})}
	s.mu.Lock()
	s.held[k] = h
	s.mu.Unlock()
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		defer close(h.done)
		s.hold(ctx, c.kv, k, h, rev)
	}()
	return true
}

// endReason says why a holding ended.
type endReason string

const (
	endShutdown endReason = "shutdown"
	endReleased endReason = "released"
	endReturned endReason = "leading function returned"
	endConflict endReason = "another process took the shard"
)

// hold runs Leading for shard k and renews its lease until the lease ends,
// then waits for Leading to return and, when the end is voluntary, deletes
// the key so another process can take over at once. A renewal that fails
// for any reason but another process's record on the key is retried for as
// long as it takes: the holder keeps leading.
func (s *Set) hold(ctx context.Context, kv jetstream.KeyValue, k int, h *holding, rev uint64) {
	key := shardKey(k)
	log := s.log.With("shard", k)
	leadCtx, cancelLead := context.WithCancel(ctx)
	defer cancelLead()
	leadDone := make(chan struct{})
	go func() {
		defer close(leadDone)
		s.opts.Leading(leadCtx, k)
	}()
	s.opts.Metrics.set(k, true, "acquired")
	s.changed()

	renewT := time.NewTimer(s.timing.renewEvery)
	defer renewT.Stop()
	// A run of failed renewals (NATS unreachable, unhealthy) is logged when
	// it starts, then at most once per TTL, and when it ends.
	var failingSince, lastLogged time.Time
	failing := func(msg string, args ...any) {
		now := time.Now()
		if failingSince.IsZero() {
			failingSince = now
		} else if now.Sub(lastLogged) < s.timing.ttl {
			return
		}
		lastLogged = now
		log.Warn(msg, append(args, "failing_for", now.Sub(failingSince).Round(time.Millisecond))...)
	}

	var reason endReason
	for reason == "" {
		select {
		case <-ctx.Done():
			reason = endShutdown
		case <-h.release:
			reason = endReleased
		case <-leadDone:
			reason = endReturned
		case <-h.lost:
			reason = endConflict
		case <-renewT.C:
			if !s.healthy() {
				failing("not renewing shard lease: unhealthy; leading until another process takes the shard")
				renewT.Reset(s.timing.retryEvery)
				continue
			}
			newRev, lost, err := s.renew(ctx, kv, key, k, rev)
			switch {
			case lost:
				reason = endConflict
			case err == nil:
				if !failingSince.IsZero() {
					log.Info("shard lease renewed again", "failing_for", time.Since(failingSince).Round(time.Millisecond))
					failingSince = time.Time{}
				}
				rev = newRev
				renewT.Reset(s.timing.renewEvery)
			case ctx.Err() != nil:
				reason = endShutdown
			default:
				failing("renew shard lease; still leading", "err", err)
				renewT.Reset(s.timing.retryEvery)
			}
		}
	}
	cancelLead()
	<-leadDone

	voluntary := reason == endShutdown || reason == endReleased || reason == endReturned
	if voluntary {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.timing.renewEvery)
		if err := kv.Delete(cctx, key, jetstream.LastRevision(rev)); err != nil {
			log.Warn("release shard lease", "err", err)
		}
		cancel()
		log.Info("released shard lease", "reason", string(reason))
	} else {
		log.Warn("lost shard lease", "reason", string(reason))
	}
	s.mu.Lock()
	delete(s.held, k)
	if voluntary {
		s.released[k] = time.Now()
	}
	s.mu.Unlock()
	change := "lost"
	if voluntary {
		change = "released"
	}
	s.opts.Metrics.set(k, false, change)
	s.changed()
}

// renew writes this process's record on the shard key over revision rev and
// returns the new revision. lost reports that another process holds the
// shard: the revision moved and the key now names another session. When the
// revision moved but the key still names this session (an earlier renewal
// landed and only its answer was lost) the key's revision is adopted; when
// the key is gone it is created again. Any other failure is an error to
// retry, never a loss.
func (s *Set) renew(ctx context.Context, kv jetstream.KeyValue, key string, k int, rev uint64) (newRev uint64, lost bool, err error) {
	cctx, cancel := context.WithTimeout(ctx, s.timing.renewEvery)
	defer cancel()
	newRev, err = kv.Update(cctx, key, s.encode(&k, true), rev)
	if err == nil || !(errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists)) {
		return newRev, false, err
	}
	e, gerr := kv.Get(cctx, key)
	switch {
	case errors.Is(gerr, jetstream.ErrKeyNotFound), errors.Is(gerr, jetstream.ErrKeyDeleted):
		newRev, err = kv.Create(cctx, key, s.encode(&k, true))
		if errors.Is(err, jetstream.ErrKeyExists) {
			return 0, false, fmt.Errorf("recreate shard key %s: %w", key, err) // look again next time
		}
		return newRev, false, err
	case gerr != nil:
		return 0, false, fmt.Errorf("read shard key %s after a refused renewal: %w", key, gerr)
	}
	var rec record
	if json.Unmarshal(e.Value(), &rec) == nil && rec.Session == s.session {
		return e.Revision(), false, nil
	}
	return 0, true, nil
}

// releasedRecently reports whether this process released shard k less than
// a TTL ago: it leaves the shard to the others for that long, so that a
// balancing release is not undone and a Leading function that returns at
// once does not spin.
func (s *Set) releasedRecently(k int, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	at, ok := s.released[k]
	return ok && now.Sub(at) < s.timing.ttl
}

// changed reports the shards held to OnChange, one call at a time so that
// the last call always carries the current set.
func (s *Set) changed() {
	if s.opts.OnChange == nil {
		return
	}
	s.changeMu.Lock()
	defer s.changeMu.Unlock()
	s.opts.OnChange(s.Held())
}
