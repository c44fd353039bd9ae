// Package schemas embeds the bridge's public contract: a JSON Schema
// (2020-12) for the data of every event type (<type>.schema.json), the schema
// of the current-state bucket's values (agent-state.schema.json) and the
// AsyncAPI 3.0 document (asyncapi.yaml). Validator checks documents against
// the schemas; tests across the project use it on every event they see.
package schemas

import (
	"bytes"
	"embed"
	"fmt"
	"io/fs"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/ccaas/presence-bridge/internal/contract"
)

//go:embed *.schema.json asyncapi.yaml
var files embed.FS

// AgentState names the schema of the state bucket's values.
const AgentState = "agent-state"

// FS returns the embedded schema files and asyncapi.yaml.
func FS() fs.FS { return files }

// Validator validates documents against the embedded schemas, with formats
// (date-time, uri) asserted.
type Validator struct {
	schemas map[string]*jsonschema.Schema
}

// NewValidator compiles every embedded schema.
func NewValidator() (*Validator, error) {
	names, err := fs.Glob(files, "*.schema.json")
	if err != nil {
		return nil, fmt.Errorf("list schemas: %w", err)
	}
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	for _, n := range names {
		b, err := files.ReadFile(n)
		if err != nil {
			return nil, fmt.Errorf("read schema %s: %w", n, err)
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
		if err != nil {
			return nil, fmt.Errorf("parse schema %s: %w", n, err)
		}
		if err := c.AddResource(contract.SchemaBaseURL+n, doc); err != nil {
			return nil, fmt.Errorf("add schema %s: %w", n, err)
		}
	}
	v := &Validator{schemas: map[string]*jsonschema.Schema{}}
	for _, n := range names {
		s, err := c.Compile(contract.SchemaBaseURL + n)
		if err != nil {
			return nil, fmt.Errorf("compile schema %s: %w", n, err)
		}
		v.schemas[strings.TrimSuffix(n, ".schema.json")] = s
	}
	return v, nil
}

// Names returns the names of the compiled schemas: the event types and
// AgentState.
func (v *Validator) Names() []string {
	out := make([]string, 0, len(v.schemas))
	for n := range v.schemas {
		out = append(out, n)
	}
	return out
}

// Validate checks a JSON document against the schema called name (an event
// type such as "presence.changed", or AgentState).
func (v *Validator) Validate(name string, doc []byte) error {
	s, ok := v.schemas[name]
	if !ok {
		return fmt.Errorf("validate %s: no schema of that name", name)
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(doc))
	if err != nil {
		return fmt.Errorf("validate %s: parse document: %w", name, err)
	}
	if err := s.Validate(inst); err != nil {
		return fmt.Errorf("validate %s: %w", name, err)
	}
	return nil
}
