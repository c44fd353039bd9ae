package pipeline

import (
	"context"

	"github.com/ccaas/presence-bridge/internal/detector"
)

// RebuildUpTo rebuilds the agent's state as of stream sequence upTo, as
// Follow does when it has no usable base.
func (j *StreamJournal) RebuildUpTo(ctx context.Context, agentID string, upTo uint64) (detector.AgentState, error) {
	s, err := j.handle(ctx)
	if err != nil {
		return detector.AgentState{}, err
	}
	return j.rebuild(ctx, s, agentID, upTo)
}
