package ceheader

import (
	"math/rand/v2"
	"testing"

	"github.com/nats-io/nats.go"
)

func TestEncode(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"the binding's example", "Euro \u20ac \U0001F600", "Euro%20%E2%82%AC%20%F0%9F%98%80"},
		{"plain organisation URL", "https://contoso.crm.dynamics.com/api/data/v9.2/systemusers(394382b6-a4d4-ee11-904c-00224808a166)", "https://contoso.crm.dynamics.com/api/data/v9.2/systemusers(394382b6-a4d4-ee11-904c-00224808a166)"},
		{"percent in a URL", "https://contoso.example/my%20org", "https://contoso.example/my%2520org"},
		{"double quote", `say "hi"`, "say%20%22hi%22"},
		{"control characters and DEL", "a\tb\r\nc\x7f", "a%09b%0D%0Ac%7F"},
		{"printable ASCII kept", "!#$&'()*+,-./:;<=>?@[\\]^_`{|}~", "!#$&'()*+,-./:;<=>?@[\\]^_`{|}~"},
		{"empty", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Encode(tt.in); got != tt.want {
				t.Errorf("Encode(%q) = %q, want %q", tt.in, got, tt.want)
			}
			if got := string(Append([]byte("x"), tt.in)); got != "x"+tt.want {
				t.Errorf("Append = %q, want %q", got, "x"+tt.want)
			}
		})
	}
}

func TestDecode(t *testing.T) {
	tests := []struct {
		name, in, want string
		wantErr        bool
	}{
		{"the binding's example", "Euro%20%E2%82%AC%20%F0%9F%98%80", "Euro \u20ac \U0001F600", false},
		{"lower-case hex accepted", "%e2%82%ac", "\u20ac", false},
		{"unnecessary encoding accepted", "%41%42c", "ABc", false},
		{"no escapes", "https://contoso.crm.dynamics.com", "https://contoso.crm.dynamics.com", false},
		{"percent-encoded percent decoded once", "my%2520org", "my%20org", false},
		{"quoted-string unquoted first", `"a b \"c\" %41"`, `a b "c" A`, false},
		{"overlong encoding rejected", "%C0%A0", "", true},
		{"truncated escape", "abc%4", "", true},
		{"invalid hex", "%GZ", "", true},
		{"unterminated quoted-string", `"abc`, "", true},
		{"raw invalid UTF-8", "a\xffb", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Decode(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("Decode(%q) error = %v, want error %v", tt.in, err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("Decode(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

// TestRoundTrip checks on random strings that Encode produces only printable
// ASCII without space, double quote or a bare percent, and that Decode
// gives the original back.
func TestRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	alphabet := []rune("aZ09 %\"\\\t\n\x00\x7f()/:é€\U0001F600")
	for range 5000 {
		rs := make([]rune, r.IntN(24))
		for i := range rs {
			rs[i] = alphabet[r.IntN(len(alphabet))]
		}
		s := string(rs)
		enc := Encode(s)
		for i := 0; i < len(enc); i++ {
			if c := enc[i]; c < 0x21 || c > 0x7E || c == '"' {
				t.Fatalf("Encode(%q) = %q holds byte %#x", s, enc, c)
			}
		}
		dec, err := Decode(enc)
		if err != nil || dec != s {
			t.Fatalf("Decode(Encode(%q)) = %q, %v", s, dec, err)
		}
	}
}

func TestDecodeHeader(t *testing.T) {
	h := nats.Header{
		"ce-source":   {"https://x.example/a%20b"},
		"Ce-Subject":  {"caf%C3%A9"},
		"Nats-Msg-Id": {"keep%20me"},
	}
	got, err := DecodeHeader(h)
	if err != nil {
		t.Fatal(err)
	}
	if got.Get("ce-source") != "https://x.example/a b" || got["Ce-Subject"][0] != "café" || got.Get("Nats-Msg-Id") != "keep%20me" {
		t.Errorf("decoded %v", got)
	}
	if h.Get("ce-source") != "https://x.example/a%20b" {
		t.Error("DecodeHeader changed its input")
	}
	if _, err := DecodeHeader(nats.Header{"ce-id": {"%C0%A0"}}); err == nil {
		t.Error("invalid UTF-8 accepted")
	}
}
