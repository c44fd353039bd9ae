package source

// ExcerptForTest exposes excerpt to the external tests.
var ExcerptForTest = excerpt

// Readable reports whether the feed's last read succeeded.
func (f *Feed) Readable() bool { return f.up.Load() }

// StateCounts returns the number of agents in each state, by state name
// (what the ccaas_bridge_agents gauge reports).
func (p *Poller) StateCounts() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]int, numStates)
	for s := State(0); s < numStates; s++ {
		out[s.String()] = p.counts[s]
	}
	return out
}

// TokenObtained reports whether the client ever obtained a token.
func (c *Client) TokenObtained() bool { return c.tokenObtained.Load() }

// InflightCap returns the number of requests the poller currently allows
// in flight.
func (p *Poller) InflightCap() int {
	p.gate.mu.Lock()
	defer p.gate.mu.Unlock()
	return p.gate.cap
}
