// Package ceheader provides the header-value encoding of the CloudEvents NATS
// protocol binding (binary content mode, section 3.1.3.2): on the way out
// every attribute value is percent-encoded (space, double quote, percent and
// every character outside printable US-ASCII U+0021–U+007E, as the UTF-8
// bytes %XY with upper-case hex); on the way in a value is first unquoted if
// it is an RFC 7230 quoted-string, then percent-decoded once, and rejected
// if the result is not valid UTF-8.
//
// The CloudEvents Go SDK's nats_jetstream binding does neither: the bridge
// encodes with Append or Encode, and decoders apply DecodeHeader to a
// message's headers before handing them to the SDK.
package ceheader

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
)

// Prefix starts the header name of every CloudEvents attribute in binary
// content mode (ce-id, ce-source, …).
const Prefix = "ce-"

const upperHex = "0123456789ABCDEF"

// needsEncoding reports whether byte c of a UTF-8 string must be
// percent-encoded. Every byte of a multi-byte character is >= 0x80, so
// testing bytes is the same as testing characters.
func needsEncoding(c byte) bool {
	return c <= 0x20 || c >= 0x7F || c == '"' || c == '%'
}

// Append appends the percent-encoded form of s to dst.
func Append(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if needsEncoding(c) {
			dst = append(dst, '%', upperHex[c>>4], upperHex[c&0x0F])
			continue
		}
		dst = append(dst, c)
	}
	return dst
}

// Encode returns the percent-encoded form of s; s itself when nothing in it
// needs encoding.
func Encode(s string) string {
	for i := 0; i < len(s); i++ {
		if needsEncoding(s[i]) {
			return string(Append(make([]byte, 0, len(s)+16), s))
		}
	}
	return s
}

// Decode returns the attribute value carried by header value v: unquoted
// when v is a quoted-string, then percent-decoded once. It fails on a
// malformed quoted-string or escape, and on a result that is not UTF-8.
func Decode(v string) (string, error) {
	if strings.HasPrefix(v, `"`) {
		u, err := unquote(v)
		if err != nil {
			return "", err
		}
		v = u
	}
	if !strings.Contains(v, "%") {
		if !utf8.ValidString(v) {
			return "", errors.New("header value is not valid UTF-8")
		}
		return v, nil
	}
	b := make([]byte, 0, len(v))
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c != '%' {
			b = append(b, c)
			continue
		}
		if i+2 >= len(v) {
			return "", fmt.Errorf("truncated percent-escape at offset %d", i)
		}
		hi, ok1 := unhex(v[i+1])
		lo, ok2 := unhex(v[i+2])
		if !ok1 || !ok2 {
			return "", fmt.Errorf("invalid percent-escape %q at offset %d", v[i:i+3], i)
		}
		b = append(b, hi<<4|lo)
		i += 2
	}
	if !utf8.Valid(b) {
		return "", errors.New("percent-decoded header value is not valid UTF-8")
	}
	return string(b), nil
}

// unquote undoes an RFC 7230 quoted-string: "…" with backslash escapes.
func unquote(v string) (string, error) {
	if len(v) < 2 || v[len(v)-1] != '"' {
		return "", errors.New("unterminated quoted-string in header value")
	}
	var b strings.Builder
	in := v[1 : len(v)-1]
	for i := 0; i < len(in); i++ {
		c := in[i]
		switch c {
		case '\\':
			if i+1 == len(in) {
				return "", errors.New("dangling backslash in quoted header value")
			}
			i++
			b.WriteByte(in[i])
		case '"':
			return "", errors.New("unescaped double quote inside quoted header value")
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), nil
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// DecodeHeader returns a copy of h in which the value of every ce- header is
// decoded with Decode; other headers are copied as they are. Hand the copy
// to the SDK (cejs.NewMessage) to get the event the sender meant.
func DecodeHeader(h nats.Header) (nats.Header, error) {
	out := make(nats.Header, len(h))
	for k, vs := range h {
		if !strings.HasPrefix(strings.ToLower(k), Prefix) {
			out[k] = vs
			continue
		}
		dec := make([]string, len(vs))
		for i, v := range vs {
			d, err := Decode(v)
			if err != nil {
				return nil, fmt.Errorf("decode header %s: %w", k, err)
			}
			dec[i] = d
		}
		out[k] = dec
	}
	return out, nil
}
