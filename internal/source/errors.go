package source

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// MaxExcerpt bounds the excerpt of a malformed body carried in a PollError.
const MaxExcerpt = 256

// PollError is the error of a failed poll. It carries the class that decides
// how the poller treats the agent, the HTTP status when there was one, the
// Retry-After of a 429, and for malformed bodies a bounded excerpt of the
// body. It never contains request headers or the token.
type PollError struct {
	// AgentID is the agent that was polled.
	AgentID string
	// Class classifies the failure.
	Class ErrorClass
	// StatusCode is the HTTP status, 0 when no response was received.
	StatusCode int
	// RetryAfter is the delay a 429 asked for, 0 when it gave none.
	RetryAfter time.Duration
	// Excerpt is the start of a malformed body (or of an error body that is
	// not Dataverse's error shape), quoted, at most MaxExcerpt bytes of it.
	Excerpt string
	// Code is the Dataverse error code of the answer's body, e.g.
	// "0x80072322"; empty when there was none.
	Code string
	// Message is the Dataverse error message, bounded and redacted.
	Message string
	// Kind classifies Code (and the status when there is no code).
	Kind CodeKind
	// Err is the underlying cause.
	Err error
}

// Error describes the failure.
func (e *PollError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "poll agent %s: %s", e.AgentID, e.Class)
	if e.StatusCode != 0 {
		fmt.Fprintf(&b, " (HTTP %d)", e.StatusCode)
	}
	if e.Code != "" {
		fmt.Fprintf(&b, " %s", e.Code)
	}
	if e.RetryAfter > 0 {
		fmt.Fprintf(&b, " retry after %s", e.RetryAfter)
	}
	if e.Message != "" {
		fmt.Fprintf(&b, ": %q", e.Message)
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	if e.Excerpt != "" {
		b.WriteString("; body starts ")
		b.WriteString(e.Excerpt)
	}
	return b.String()
}

// Hint returns what an operator should do about the failure, or "".
func (e *PollError) Hint() string {
	switch e.Class {
	case ClassToken, ClassAuth:
		return KindToken.Hint()
	case ClassTransport:
		return HintUnreachable
	}
	return e.Kind.Hint()
}

// HintUnreachable is the fix of a poll that got no answer.
const HintUnreachable = "the organisation is unreachable: check BRIDGE_ORG_URL (https://<org>.crm.dynamics.com, without /api/data/v9.2), DNS, proxies and the network path"

// Unwrap returns the underlying cause.
func (e *PollError) Unwrap() error { return e.Err }

// ClassOf returns the error class of err: ClassOK for nil, the class of a
// *PollError in its chain, and ClassTransport for anything else.
func ClassOf(err error) ErrorClass {
	if err == nil {
		return ClassOK
	}
	var pe *PollError
	if errors.As(err, &pe) {
		return pe.Class
	}
	return ClassTransport
}

// classForStatus maps a non-200 HTTP status to its error class, following
// the status table of the CCaaS_GetPresence contract. Statuses the contract
// does not list are mapped by family: other 4xx (403 is what Dataverse
// answers when impersonation is not allowed) and 3xx are permanent for the
// agent, everything else a server error.
func classForStatus(code int) ErrorClass {
	switch {
	case code == 401:
		return ClassAuth
	case code == 429:
		return ClassRateLimited
	case code >= 500:
		return ClassServer
	case code >= 300 && code < 500:
		return ClassPermanent
	default:
		return ClassServer
	}
}

// excerpt returns at most MaxExcerpt bytes of body, quoted, with every
// occurrence of secret replaced so a server echoing the request cannot leak
// the token into an error.
func excerpt(body []byte, secret string) string {
	cut := len(body) > MaxExcerpt
	if cut {
		body = body[:MaxExcerpt]
	}
	s := strings.ToValidUTF8(string(body), "\uFFFD")
	if secret != "" {
		s = redact(s, secret)
	}
	q := fmt.Sprintf("%q", s)
	if cut {
		q += "..."
	}
	return q
}

// redact replaces secret in s, including a secret cut off at the end of s.
func redact(s, secret string) string {
	s = strings.ReplaceAll(s, secret, "[REDACTED]")
	// A truncated excerpt may end with a prefix of the secret.
	for n := min(len(secret)-1, len(s)); n >= 8; n-- {
		if strings.HasSuffix(s, secret[:n]) {
			return s[:len(s)-n] + "[REDACTED]"
		}
	}
	return s
}
