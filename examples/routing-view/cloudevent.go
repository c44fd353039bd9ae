package main

// Each example copies this file on purpose, to stand alone on public libraries; TestExamplesShareOneDecoder (cmd/bridge) keeps the copies identical.

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"unicode/utf8"

	cejs "github.com/cloudevents/sdk-go/protocol/nats_jetstream/v2"
	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// decodeEvent decodes a message in CloudEvents binary content mode as the
// CloudEvents NATS protocol binding specifies: every ce- header value is
// unquoted if it is a quoted-string, percent-decoded once and checked to be
// UTF-8, then the SDK's NATS JetStream binding builds the event. (The SDK
// does not percent-decode by itself; without this step a source such as
// https://contoso.example/my%20org would be read as it travels,
// https://contoso.example/my%2520org.)
func decodeEvent(ctx context.Context, msg jetstream.Msg) (*event.Event, error) {
	h := make(nats.Header, len(msg.Headers()))
	for k, vs := range msg.Headers() {
		if !strings.HasPrefix(strings.ToLower(k), "ce-") {
			h[k] = vs
			continue
		}
		for _, v := range vs {
			d, err := decodeHeaderValue(v)
			if err != nil {
				return nil, fmt.Errorf("decode header %s on %s: %w", k, msg.Subject(), err)
			}
			h[k] = append(h[k], d)
		}
	}
	ev, err := binding.ToEvent(ctx, cejs.NewMessage(&nats.Msg{Subject: msg.Subject(), Header: h, Data: msg.Data()}))
	if err != nil {
		return nil, fmt.Errorf("decode event on %s: %w", msg.Subject(), err)
	}
	return ev, nil
}

// decodeHeaderValue undoes the binding's header-value encoding.
func decodeHeaderValue(v string) (string, error) {
	if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' { // quoted-string, from older senders
		var b strings.Builder
		for i := 1; i < len(v)-1; i++ {
			if v[i] == '\\' && i+1 < len(v)-1 {
				i++
			}
			b.WriteByte(v[i])
		}
		v = b.String()
	}
	d, err := url.PathUnescape(v) // %XY only; '+' stays '+'
	if err != nil {
		return "", err
	}
	if !utf8.ValidString(d) {
		return "", errors.New("header value is not UTF-8 once percent-decoded")
	}
	return d, nil
}
