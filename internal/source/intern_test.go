package source

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"unsafe"
)

func sameString(a, b string) bool { return unsafe.StringData(a) == unsafe.StringData(b) }

func TestInternerStrings(t *testing.T) {
	long := strings.Repeat("x", maxInternedLen+1)
	tests := []struct {
		name  string
		value string
		share bool
	}{
		{"a presence name", "Available", true},
		{"a GUID", "f523f628-c07a-e811-8162-000d3aa11f50", true},
		{"the longest interned", strings.Repeat("y", maxInternedLen), true},
		{"too long", long, false},
		{"empty", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := NewInterner()
			first := in.String(strings.Clone(tt.value))
			second := in.String(strings.Clone(tt.value))
			if first != tt.value || second != tt.value {
				t.Fatalf("interned %q, %q; want %q", first, second, tt.value)
			}
			if got := tt.value != "" && sameString(first, second); got != tt.share {
				t.Errorf("shared = %v, want %v", got, tt.share)
			}
		})
	}
}

func TestInternerBounded(t *testing.T) {
	in := NewInterner()
	for i := range maxInterned {
		in.String(fmt.Sprintf("presence %d", i))
		in.List([]string{fmt.Sprintf("channel %d", i)})
	}
	s := strings.Clone("one more")
	if got := in.String(s); !sameString(got, s) || len(in.strs) != maxInterned {
		t.Errorf("past the bound: %d strings held, the new one interned: %v", len(in.strs), !sameString(got, s))
	}
	l := []string{"chat", "voice"}
	if got := in.List(l); unsafe.SliceData(got) != unsafe.SliceData(l) || len(in.lists) != maxInterned {
		t.Errorf("past the bound: %d lists held, the new one interned: %v", len(in.lists), unsafe.SliceData(got) != unsafe.SliceData(l))
	}
	// What was interned before the bound is still shared.
	a, b := in.String(strings.Clone("presence 7")), in.String(strings.Clone("presence 7"))
	if !sameString(a, b) {
		t.Error("an interned string is no longer shared past the bound")
	}
}

func TestInternerLists(t *testing.T) {
	tests := []struct {
		name string
		list []string
	}{
		{"nil", nil},
		{"empty", []string{}},
		{"one", []string{"chat"}},
		{"several, order kept", []string{"voice", "chat", "email"}},
		{"a NUL in a name", []string{"a\x00b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := NewInterner()
			first := in.List(slices.Clone(tt.list))
			second := in.List(slices.Clone(tt.list))
			if !slices.Equal(first, tt.list) || !slices.Equal(second, tt.list) || (first == nil) != (tt.list == nil) || (second == nil) != (tt.list == nil) {
				t.Fatalf("interned %q, %q; want %q", first, second, tt.list)
			}
			if len(tt.list) == 0 {
				return
			}
			if unsafe.SliceData(first) != unsafe.SliceData(second) {
				t.Error("equal lists not shared")
			}
			if cap(first) != len(first) {
				t.Errorf("capacity %d, length %d: an append would write into the shared list", cap(first), len(first))
			}
			if !sameString(first[0], in.String(strings.Clone(tt.list[0]))) {
				t.Error("the list's names are not interned")
			}
		})
	}
	// "a\x00b" and ["a", "b"] share a key: each still gets its own content.
	in := NewInterner()
	x, y := in.List([]string{"a\x00b"}), in.List([]string{"a", "b"})
	if !slices.Equal(x, []string{"a\x00b"}) || !slices.Equal(y, []string{"a", "b"}) {
		t.Errorf("lists with colliding keys: %q, %q", x, y)
	}
}

// TestClientKeepsSharedValues: the answer the client keeps for an agent
// holds the presence values and channel lists of the Interner it was given,
// so a detector holding the agent's state with the same Interner holds
// them once.
func TestClientKeepsSharedValues(t *testing.T) {
	in := NewInterner()
	c, err := NewClient(ClientOptions{OrgURL: "https://contoso.crm.dynamics.com", Tokens: StaticToken("t"), Interner: in})
	if err != nil {
		t.Fatal(err)
	}
	const id = "394382b6-a4d4-ee11-904c-00224808a166"
	body := []byte(`{"AgentId":"` + id + `","AgentName":"Ada","PresenceId":"f523f628-c07a-e811-8162-000d3aa11f50",` +
		`"CurrentPresenceStatusInfo":"Available","ActiveBrowserSessions":1,"Timestamp":1796000000,` +
		`"AllowedChannels":["chat","voice"],"DisabledChannels":["sms"]}`)
	var last LastAnswer
	if _, _, err := c.answer(body, id, "t", &last); err != nil {
		t.Fatal(err)
	}
	kept := last.snap
	if kept == nil {
		t.Fatal("no answer kept")
	}
	for _, tc := range []struct{ name, got, want string }{
		{"presence ID", kept.PresenceID, in.String(strings.Clone("f523f628-c07a-e811-8162-000d3aa11f50"))},
		{"presence name", kept.PresenceName, in.String(strings.Clone("Available"))},
		{"a channel", kept.AllowedChannels[0], in.String(strings.Clone("chat"))},
		{"agent ID", kept.AgentID, id},
	} {
		if !sameString(tc.got, tc.want) {
			t.Errorf("%s %q is a copy of its own", tc.name, tc.got)
		}
	}
	if l := in.List([]string{"chat", "voice"}); unsafe.SliceData(l) != unsafe.SliceData(kept.AllowedChannels) {
		t.Error("the allowed channels are a list of their own")
	}
}
