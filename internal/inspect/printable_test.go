package inspect

import "testing"

func TestPrintable(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"plain name", "Liam Okafor", "Liam Okafor"},
		{"accents and emoji kept", "Zoë Ñúñez 😀", "Zoë Ñúñez 😀"},
		{"ANSI escape", "Eve\x1b[2J\x1b[31m", `Eve\x1b[2J\x1b[31m`},
		{"newline and carriage return", "a\nb\rc", `a\nb\rc`},
		{"tab", "a\tb", `a\tb`},
		{"DEL and C1 CSI", "a\x7fb\u009bc", `a\x7fb\u009bc`},
		{"right-to-left override", "abc\u202eexe.txt", `abc\u202eexe.txt`},
		{"bell", "ring\a", `ring\a`},
		{"invalid UTF-8", "bad\xffbyte", `bad\xffbyte`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Printable(tt.in); got != tt.want {
				t.Errorf("Printable(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}
