package inspect

import (
	"testing"

	"github.com/ccaas/presence-bridge/schemas"
)

// TestFixtureMatchesContract keeps the known events of these tests valid
// against the published schemas, so the tests read what the bridge writes.
func TestFixtureMatchesContract(t *testing.T) {
	v, err := schemas.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fixture() {
		if err := v.Validate(f.typ, []byte(f.data)); err != nil {
			t.Errorf("fixture %s-%d (%s): %v", f.agent, f.seq, f.typ, err)
		}
	}
	for _, k := range []string{alice, bob} {
		if err := v.Validate(schemas.AgentState, []byte(stateValues[k])); err != nil {
			t.Errorf("state value of %s: %v", k, err)
		}
	}
}
