// completion.go holds the end of a batch's life in the Publisher: a few
// workers call the done callbacks, each agent's always on the same worker
// and so in enqueue order, and only after its done returned does a batch
// give its window space back (waking Enqueue and Flush).

package publish

import "hash/maphash"

// completionWorkers is how many goroutines call done callbacks.
const completionWorkers = 4

// startCompletions starts the completion workers; Close stops them.
func (p *Publisher) startCompletions() {
	for i := range p.completions {
		// At most one pending completion per held event: never blocks.
		p.completions[i] = make(chan *batch, p.opts.MaxPending+1)
		p.wg.Add(1)
		go p.runCompletions(p.completions[i])
	}
}

// dispatchLocked hands a finished batch to its agent's completion worker. The
// send never blocks: each channel holds more than the window's batches.
// Once the publisher is closed there is nothing left to dispatch.
func (p *Publisher) dispatchLocked(b *batch) {
	if p.state != stateClosed {
		p.completions[shard(b.agent)] <- b
	}
}

// stopCompletionsLocked tells the completion workers to return once they
// have called the done callbacks dispatched so far; the publisher must be
// closed, so that nothing is dispatched any more.
func (p *Publisher) stopCompletionsLocked() {
	for _, ch := range p.completions {
		close(ch)
	}
}

// runCompletions calls done callbacks; batches of one agent always go to the
// same worker, in the order they completed, which is their enqueue order.
// After each, the batch's window space is released.
func (p *Publisher) runCompletions(ch chan *batch) {
	defer p.wg.Done()
	for b := range ch {
		if b.done != nil {
			b.done(b.last, b.err)
		}
		p.mu.Lock()
		p.inUse -= b.size
		p.m.setWindow(p.inUse)
		if p.inUse == 0 {
			p.idles++
		}
		p.changed.Broadcast()
		p.mu.Unlock()
	}
}

// shard picks the completion worker of an agent: a hash of its ID.
func shard(agent string) int {
	return int(maphash.String(workerSeed, agent) % completionWorkers)
}

// workerSeed seeds the hash that picks an agent's worker: fixed for the
// process, so an agent always has the same worker.
var workerSeed = maphash.MakeSeed()
