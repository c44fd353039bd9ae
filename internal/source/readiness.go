package source

import (
	"fmt"
	"strings"
)

// Readiness returns the source's readiness check for the operator HTTP
// server: ready once the organisation accepted a token (tokenAccepted, e.g.
// Client.TokenAccepted), every agent was polled once, and the last poll of
// at least minShare of the polled agents succeeded. Otherwise the reason
// names the dominant failure: its class, HTTP status and Dataverse code,
// the number of agents affected (never their IDs) and the fix for the
// common cases.
func Readiness(p *Poller, tokenAccepted func() bool, minShare float64) func() (bool, string) {
	return func() (bool, string) {
		st := p.Status()
		if st.Agents == 0 {
			return true, ""
		}
		if !st.FirstRoundDone {
			return false, fmt.Sprintf("first poll round not done (%d of %d agents polled)", st.Polled, st.Agents)
		}
		share := float64(st.Succeeding) / float64(max(st.Polled, 1))
		accepted := tokenAccepted == nil || tokenAccepted()
		if accepted && share >= minShare {
			return true, ""
		}
		var b strings.Builder
		if !accepted {
			b.WriteString("no token accepted by the organisation yet; ")
		}
		fmt.Fprintf(&b, "%d of %d agents failing (ready needs %.0f%% succeeding)", st.Polled-st.Succeeding, st.Polled, minShare*100)
		if len(st.Failing) > 0 {
			f := st.Failing[0]
			fmt.Fprintf(&b, "; most: %s", f.Class)
			if f.Status != 0 {
				fmt.Fprintf(&b, " (HTTP %d", f.Status)
				if f.Code != "" {
					fmt.Fprintf(&b, ", code %s", f.Code)
				}
				b.WriteString(")")
			}
			fmt.Fprintf(&b, " for %d agents", f.Agents)
			hint := f.Kind.Hint()
			switch {
			case f.Class == ClassToken || f.Class == ClassAuth:
				hint = KindToken.Hint()
			case f.Class == ClassTransport:
				hint = HintUnreachable
			}
			if hint != "" {
				b.WriteString("; fix: ")
				b.WriteString(hint)
			}
		}
		return false, b.String()
	}
}
