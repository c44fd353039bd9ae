package simulator

import (
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"time"
)

// Reasons a bearer token is refused, returned by authenticate.
var (
	errNoToken      = errors.New("no bearer token")
	errTokenExpired = errors.New("the access token has expired")
	errTokenRefused = errors.New("the access token is not valid")
)

// TokenValidator decides whether a bearer token is accepted, for tokens
// neither static nor issued by the simulator (e.g. those of a fake Entra ID
// authority in a test). A nil error accepts the token.
type TokenValidator func(token string) error

// IssueToken returns a new bearer token the simulator accepts until it is
// older than the token TTL (Options.TokenTTL, SetTokenTTL) or revoked. The
// token is random and never logged.
func (s *Simulator) IssueToken() string {
	tok := "sim." + rand.Text()
	s.tmu.Lock()
	defer s.tmu.Unlock()
	s.issued[tok] = s.now()
	s.tokensIssued++
	return tok
}

// ExpireTokens makes every token issued so far expired, as if the TTL had
// passed; static tokens are unaffected.
func (s *Simulator) ExpireTokens() {
	s.tmu.Lock()
	defer s.tmu.Unlock()
	for tok := range s.issued {
		s.issued[tok] = time.Time{}
	}
}

// SetTokenTTL sets the age beyond which issued tokens are refused with 401;
// zero means they never expire. Safe while serving.
func (s *Simulator) SetTokenTTL(ttl time.Duration) {
	s.tmu.Lock()
	defer s.tmu.Unlock()
	s.tokenTTL = ttl
}

// authenticate checks a bearer token: a static token, an unexpired issued
// token, or one the validator accepts.
func (s *Simulator) authenticate(tok string, now time.Time) error {
	if tok == "" {
		return errNoToken
	}
	for _, st := range s.opts.StaticTokens {
		if subtle.ConstantTimeCompare([]byte(st), []byte(tok)) == 1 {
			return nil
		}
	}
	s.tmu.Lock()
	at, ok := s.issued[tok]
	ttl := s.tokenTTL
	s.tmu.Unlock()
	if ok {
		if at.IsZero() || ttl > 0 && now.Sub(at) >= ttl {
			return errTokenExpired
		}
		return nil
	}
	if s.opts.ValidateToken != nil {
		if err := s.opts.ValidateToken(tok); err != nil {
			return errTokenRefused
		}
		return nil
	}
	return errTokenRefused
}
