package simulator

import (
	"flag"
	"fmt"
	"strings"
)

// RegisterFlags defines flags on fs that set o's fields, with o's current
// values as defaults, for `bridge simulate`: --agents, --seed,
// --change-interval, --change-probability, --token, --token-ttl,
// --quota-requests, --quota-window, --quota-concurrent, --no-quota,
// --rate-429, --retry-after, --retry-after-date, --burst-429-every,
// --burst-429-length, --rate-5xx, --latency, --latency-jitter,
// --rate-malformed, --presences-status, --feed-status, --feed-lag, --request-log, --call-form,
// --customapis-status, --quota-scope, --quota-execution, --nulls,
// --extra-keys, --gzip, --inactive. Call it before
// fs.Parse and pass o to New after.
func (o *Options) RegisterFlags(fs *flag.FlagSet) {
	fs.IntVar(&o.Agents, "agents", o.Agents, "number of simulated agents")
	fs.Uint64Var(&o.Seed, "seed", o.Seed, "seed of the random generator of agents and changes")
	fs.DurationVar(&o.ChangeInterval, "change-interval", o.ChangeInterval, "period of the rounds of random changes")
	fs.Float64Var(&o.ChangeProbability, "change-probability", o.ChangeProbability, "probability that an agent changes in one round")
	fs.Var(&tokenList{dst: &o.StaticTokens}, "token", "bearer token accepted (repeatable)")
	fs.DurationVar(&o.TokenTTL, "token-ttl", o.TokenTTL, "age beyond which issued tokens get 401 (0: never)")
	fs.IntVar(&o.Quota.Requests, "quota-requests", o.Quota.Requests, "service protection: requests per user in the window")
	fs.DurationVar(&o.Quota.Window, "quota-window", o.Quota.Window, "service protection: sliding window")
	fs.IntVar(&o.Quota.Concurrent, "quota-concurrent", o.Quota.Concurrent, "service protection: concurrent requests per user")
	fs.BoolVar(&o.Quota.Disabled, "no-quota", o.Quota.Disabled, "do not enforce service protection")
	fs.Float64Var(&o.Faults.Rate429, "rate-429", o.Faults.Rate429, "probability of a 429 per request")
	fs.DurationVar(&o.Faults.RetryAfter, "retry-after", o.Faults.RetryAfter, "Retry-After of an injected 429 (default 1s)")
	fs.BoolVar(&o.Faults.RetryAfterDate, "retry-after-date", o.Faults.RetryAfterDate, "send Retry-After as an HTTP date")
	fs.DurationVar(&o.Faults.Burst429Every, "burst-429-every", o.Faults.Burst429Every, "period of 429 bursts (0: none)")
	fs.DurationVar(&o.Faults.Burst429Length, "burst-429-length", o.Faults.Burst429Length, "length of each 429 burst")
	fs.Float64Var(&o.Faults.Rate5xx, "rate-5xx", o.Faults.Rate5xx, "probability of a 500, 502, 503 or 504 per request")
	fs.DurationVar(&o.Faults.Latency, "latency", o.Faults.Latency, "fixed latency added to every response")
	fs.DurationVar(&o.Faults.LatencyJitter, "latency-jitter", o.Faults.LatencyJitter, "uniformly random latency added on top, up to this")
	fs.Float64Var(&o.Faults.RateMalformed, "rate-malformed", o.Faults.RateMalformed, "probability of a malformed 200 body per request")
	fs.IntVar(&o.Faults.PresencesStatus, "presences-status", o.Faults.PresencesStatus, "status of every msdyn_presences request, e.g. 403 (0: serve it)")
	fs.IntVar(&o.Faults.FeedStatus, "feed-status", o.Faults.FeedStatus, "status of every request to the agent-status tables, e.g. 403, 404, 429 (0: serve them)")
	fs.DurationVar(&o.FeedLag, "feed-lag", o.FeedLag, "delay between a presence change and its rows in the agent-status tables")
	fs.IntVar(&o.RequestLogSize, "request-log", o.RequestLogSize, "arrival times kept per agent")
	fs.StringVar(&o.CallForm, "call-form", o.CallForm, "CCaaS_GetPresence forms accepted: bare (default), function (ApiVersion required) or both")
	fs.IntVar(&o.CustomAPIsStatus, "customapis-status", o.CustomAPIsStatus, "status of every customapis request, e.g. 403 (0: serve it)")
	fs.StringVar(&o.Quota.Scope, "quota-scope", o.Quota.Scope, "service protection charged to: agent (impersonated user) or caller (application user)")
	fs.DurationVar(&o.Quota.ExecutionTime, "quota-execution", o.Quota.ExecutionTime, "service protection: combined execution time per user in the window")
	fs.BoolVar(&o.NullEmpty, "nulls", o.NullEmpty, "send null for empty channel lists and for the Timestamp of logged-out agents")
	fs.BoolVar(&o.ExtraKeys, "extra-keys", o.ExtraKeys, "add undocumented keys to presence bodies")
	fs.BoolVar(&o.Gzip, "gzip", o.Gzip, "gzip presence bodies when the client accepts it")
	fs.BoolVar(&o.Inactive, "inactive", o.Inactive, "add the system's Inactive presence to the catalogue")
}

// tokenList is a repeatable flag whose first use replaces the default.
type tokenList struct {
	dst *[]string
	set bool
}

// String lists the tokens, comma-separated.
func (t *tokenList) String() string {
	if t == nil || t.dst == nil {
		return ""
	}
	return strings.Join(*t.dst, ",")
}

// Set adds a token; the first Set drops the defaults.
func (t *tokenList) Set(v string) error {
	if v == "" {
		return fmt.Errorf("empty token")
	}
	if !t.set {
		*t.dst, t.set = nil, true
	}
	*t.dst = append(*t.dst, v)
	return nil
}
