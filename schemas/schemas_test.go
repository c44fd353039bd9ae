package schemas_test

import (
	"encoding/json"
	"io/fs"
	"slices"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/ccaas/presence-bridge/internal/contract"
	"github.com/ccaas/presence-bridge/internal/detector"
	"github.com/ccaas/presence-bridge/internal/publish"
	"github.com/ccaas/presence-bridge/schemas"
)

// TestSchemaFiles checks that every event type has a schema whose $id is the
// event's dataschema, and that every schema compiles.
func TestSchemaFiles(t *testing.T) {
	v, err := schemas.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	names := v.Names()
	for _, typ := range append(detector.Types(), schemas.AgentState) {
		if !slices.Contains(names, typ) {
			t.Errorf("no schema for %s", typ)
			continue
		}
		b, err := fs.ReadFile(schemas.FS(), typ+".schema.json")
		if err != nil {
			t.Fatal(err)
		}
		var doc struct {
			ID     string `json:"$id"`
			Schema string `json:"$schema"`
		}
		if err := json.Unmarshal(b, &doc); err != nil {
			t.Fatalf("%s: %v", typ, err)
		}
		if want := contract.DataSchema(typ); doc.ID != want {
			t.Errorf("%s: $id %q, want %q", typ, doc.ID, want)
		}
		if doc.Schema != "https://json-schema.org/draft/2020-12/schema" {
			t.Errorf("%s: $schema %q", typ, doc.Schema)
		}
	}
}

// TestAsyncAPI checks that asyncapi.yaml describes a channel and a message
// for every type the detector can emit, with the subject pattern, the
// agentId parameter and the CloudEvent type, and that every schema file it
// names exists.
func TestAsyncAPI(t *testing.T) {
	b, err := fs.ReadFile(schemas.FS(), "asyncapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		AsyncAPI string `json:"asyncapi"`
		Channels map[string]struct {
			Address    string         `json:"address"`
			Parameters map[string]any `json:"parameters"`
			Messages   map[string]struct {
				Ref string `json:"$ref"`
			} `json:"messages"`
		} `json:"channels"`
		Components struct {
			Messages map[string]struct {
				Name    string `json:"name"`
				Headers struct {
					AllOf []struct {
						Properties map[string]struct {
							Const string `json:"const"`
						} `json:"properties"`
					} `json:"allOf"`
				} `json:"headers"`
				Payload struct {
					SchemaFormat string `json:"schemaFormat"`
					Schema       struct {
						Ref string `json:"$ref"`
					} `json:"schema"`
				} `json:"payload"`
			} `json:"messages"`
			Schemas struct {
				CloudEventHeaders struct {
					Required []string `json:"required"`
				} `json:"cloudEventHeaders"`
			} `json:"schemas"`
		} `json:"components"`
		Operations map[string]struct {
			Action  string `json:"action"`
			Channel struct {
				Ref string `json:"$ref"`
			} `json:"channel"`
		} `json:"operations"`
	}
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatalf("parse asyncapi.yaml: %v", err)
	}
	if doc.AsyncAPI != "3.0.0" {
		t.Errorf("asyncapi version %q, want 3.0.0", doc.AsyncAPI)
	}
	messageOf := map[string]string{} // component message key -> channel address
	for key, ch := range doc.Channels {
		if _, ok := ch.Parameters["agentId"]; !ok || !strings.Contains(ch.Address, "{agentId}") {
			t.Errorf("channel %s (%s) lacks the agentId parameter", key, ch.Address)
		}
		for _, m := range ch.Messages {
			messageOf[strings.TrimPrefix(m.Ref, "#/components/messages/")] = ch.Address
		}
	}
	byType := map[string]string{}
	for key, m := range doc.Components.Messages {
		byType[m.Name] = key
		ref := strings.TrimPrefix(m.Payload.Schema.Ref, "./")
		if _, err := fs.Stat(schemas.FS(), ref); err != nil {
			t.Errorf("message %s names schema %q, which does not exist", key, m.Payload.Schema.Ref)
		}
		if m.Payload.SchemaFormat != schemaFormat2020 {
			t.Errorf("message %s payload schemaFormat %q, want %q", key, m.Payload.SchemaFormat, schemaFormat2020)
		}
	}
	for _, typ := range detector.Types() {
		key, ok := byType[typ]
		if !ok {
			t.Errorf("asyncapi.yaml has no message named %s", typ)
			continue
		}
		if want := contract.SubjectPrefix + ".{agentId}." + typ; messageOf[key] != want {
			t.Errorf("message %s is on channel %q, want %q", typ, messageOf[key], want)
		}
		m := doc.Components.Messages[key]
		if m.Payload.Schema.Ref != "./"+typ+".schema.json" {
			t.Errorf("message %s payload %q", typ, m.Payload.Schema.Ref)
		}
		var ceType, dataschema string
		for _, a := range m.Headers.AllOf {
			ceType = max(ceType, a.Properties["ce-type"].Const)
			dataschema = max(dataschema, a.Properties["ce-dataschema"].Const)
		}
		if ceType != typ || dataschema != contract.DataSchema(typ) {
			t.Errorf("message %s headers: ce-type %q, ce-dataschema %q", typ, ceType, dataschema)
		}
	}
	if _, ok := byType["agent-state"]; !ok {
		t.Error("asyncapi.yaml does not describe the state bucket's values")
	}

	// The document describes the bridge: it sends on every channel.
	operated := map[string]bool{}
	for key, op := range doc.Operations {
		if op.Action != "send" {
			t.Errorf("operation %s: action %q, want send (the bridge publishes)", key, op.Action)
		}
		operated[strings.TrimPrefix(op.Channel.Ref, "#/channels/")] = true
	}
	for key := range doc.Channels {
		if !operated[key] {
			t.Errorf("channel %s has no operation", key)
		}
	}

	// Every header the encoder writes is required.
	enc, err := publish.NewEncoder(publish.EncoderOptions{Source: "https://contoso.crm.dynamics.com", BridgeVersion: "v"})
	if err != nil {
		t.Fatal(err)
	}
	msg, err := enc.Encode(detector.Event{ID: "a-1", Type: detector.Types()[0], AgentID: "a", Sequence: 1, Time: time.Unix(1, 0), Data: map[string]any{}})
	if err != nil {
		t.Fatal(err)
	}
	required := doc.Components.Schemas.CloudEventHeaders.Required
	for name := range msg.Header {
		if !slices.Contains(required, name) {
			t.Errorf("header %s is always sent but not required in cloudEventHeaders (required: %v)", name, required)
		}
	}
	if len(required) != len(msg.Header) {
		t.Errorf("cloudEventHeaders requires %v; the encoder writes %d headers", required, len(msg.Header))
	}
}

// schemaFormat2020 is the AsyncAPI schemaFormat of JSON Schema 2020-12.
const schemaFormat2020 = "application/schema+json;version=2020-12"
