// Package config reads every BRIDGE_ environment variable of the bridge with
// envconfig and validates it once, before anything starts. Every problem is
// reported as a *FieldError naming the variable and what is wrong with its
// value; values of secret variables are never echoed.
//
// The defaults written in the struct tags are the bridge's defaults: a test
// here keeps those of the contract's names equal to internal/contract's, and
// TestDefaultsMatchConfig in cmd/bridge keeps every package default for the
// same setting (source, publish, lease, ...) equal to the variable's.
package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"reflect"
	"regexp"
	"strings"
	"time"

	"github.com/kelseyhightower/envconfig"
)

// Config is the bridge's whole configuration. Every field is read from the
// environment variable named in its envconfig tag (the full name, so no
// unprefixed fallback can leak in from the environment).
type Config struct {
	// Dynamics 365 organisation and agents.
	OrgURL       string   `envconfig:"BRIDGE_ORG_URL" group:"org" desc:"Dynamics 365 organisation URL, e.g. https://contoso.crm.dynamics.com (required by run and check)"`
	AgentIDs     []string `envconfig:"BRIDGE_AGENT_IDS" group:"org" desc:"agents to poll: comma-separated systemuser GUIDs"`
	AgentIDsFile string   `envconfig:"BRIDGE_AGENT_IDS_FILE" group:"org" desc:"file with one agent GUID a line (# comments), re-read when it changes"`
	Token        string   `envconfig:"BRIDGE_TOKEN" group:"org" desc:"static bearer token (otherwise Entra ID through azidentity and the AZURE_* variables)"`
	TokenFile    string   `envconfig:"BRIDGE_TOKEN_FILE" group:"org" desc:"file holding the bearer token, re-read when it changes"`

	// Polling.
	PollInterval           time.Duration `envconfig:"BRIDGE_POLL_INTERVAL" default:"10s" group:"poll" desc:"how often each agent is polled"`
	RequestTimeout         time.Duration `envconfig:"BRIDGE_REQUEST_TIMEOUT" default:"5s" group:"poll" desc:"timeout of one CCaaS_GetPresence request"`
	MaxConcurrency         int           `envconfig:"BRIDGE_MAX_CONCURRENCY" default:"32" group:"poll" desc:"requests in flight at most, across all agents"`
	MaxRPS                 float64       `envconfig:"BRIDGE_MAX_RPS" default:"0" group:"poll" desc:"requests per second at most, across all agents (0: no cap)"`
	BackoffMax             time.Duration `envconfig:"BRIDGE_BACKOFF_MAX" default:"2m" group:"poll" desc:"cap of the exponential backoff after server errors"`
	PermanentRetry         time.Duration `envconfig:"BRIDGE_PERMANENT_RETRY" default:"5m" group:"poll" desc:"retry interval of an agent answered 400, 404 or 405"`
	PresenceCatalogRefresh time.Duration `envconfig:"BRIDGE_PRESENCE_CATALOG_REFRESH" default:"1h" group:"poll" desc:"how often custom presences are re-read from msdyn_presences"`
	PresenceMap            string        `envconfig:"BRIDGE_PRESENCE_MAP" group:"poll" desc:"presence overrides: <presenceId>=<base status>, comma-separated"`
	PresenceCall           string        `envconfig:"BRIDGE_PRESENCE_CALL" default:"auto" group:"poll" desc:"form of the CCaaS_GetPresence call: auto (read from the customapis table, else switch once on the first 400/404), bare, or function (ApiVersion=@v)"`
	QuotaScope             string        `envconfig:"BRIDGE_QUOTA_SCOPE" default:"agent" group:"poll" desc:"who Dataverse charges each call to: agent (the impersonated agent, as the contract says) or caller (the application user: all agents share 6,000 requests per 5 minutes)"`
	ReadyMinShare          float64       `envconfig:"BRIDGE_READY_MIN_SHARE" default:"0.5" group:"poll" desc:"share of agents whose last poll must have succeeded for /readyz to answer ready (0 to 1)"`

	// Change feed.
	Feed         string        `envconfig:"BRIDGE_FEED" default:"off" group:"poll" desc:"change feed from the agent-status tables (docs/feed.md): off, on, or auto (on when bridge check finds msdyn_agentstatus and msdyn_agentstatushistory readable at start)"`
	FeedInterval time.Duration `envconfig:"BRIDGE_FEED_INTERVAL" default:"1s" group:"poll" desc:"how often the change feed reads the rows written since its watermark"`
	FeedBucket   string        `envconfig:"BRIDGE_FEED_BUCKET" default:"ccaas_bridge_feed" group:"poll" desc:"JetStream key-value bucket holding the change feed's watermark"`

	// Change detection.
	StateBucket      string        `envconfig:"BRIDGE_STATE_BUCKET" default:"ccaas_agents" group:"detect" desc:"JetStream key-value bucket holding every agent's current state"`
	StaleAfter       time.Duration `envconfig:"BRIDGE_STALE_AFTER" default:"0" group:"detect" desc:"no successful poll for this long publishes presence.stale (0: 3 intervals + backoff cap)"`
	SnapshotInterval time.Duration `envconfig:"BRIDGE_SNAPSHOT_INTERVAL" default:"0" group:"detect" desc:"publish presence.snapshot of every agent this often (0: off)"`

	// NATS and JetStream.
	NATSURL            string        `envconfig:"BRIDGE_NATS_URL" group:"nats" desc:"NATS servers, comma-separated; empty runs an embedded JetStream"`
	NATSCreds          string        `envconfig:"BRIDGE_NATS_CREDS" group:"nats" desc:"NATS credentials file (JWT and NKey seed)"`
	NATSNKey           string        `envconfig:"BRIDGE_NATS_NKEY" group:"nats" desc:"NATS NKey seed file"`
	NATSUser           string        `envconfig:"BRIDGE_NATS_USER" group:"nats" desc:"NATS user name"`
	NATSPassword       string        `envconfig:"BRIDGE_NATS_PASSWORD" group:"nats" desc:"NATS password"`
	NATSToken          string        `envconfig:"BRIDGE_NATS_TOKEN" group:"nats" desc:"NATS authentication token"`
	NATSCA             string        `envconfig:"BRIDGE_NATS_CA" group:"nats" desc:"CA certificate file to verify the NATS servers"`
	NATSCert           string        `envconfig:"BRIDGE_NATS_CERT" group:"nats" desc:"client certificate file for mutual TLS"`
	NATSKey            string        `envconfig:"BRIDGE_NATS_KEY" group:"nats" desc:"client key file for mutual TLS"`
	DataDir            string        `envconfig:"BRIDGE_DATA_DIR" default:"./data" group:"nats" desc:"storage directory of the embedded JetStream"`
	EmbeddedNATSListen string        `envconfig:"BRIDGE_EMBEDDED_NATS_LISTEN" default:"127.0.0.1:4222" group:"nats" desc:"address the embedded NATS server listens on"`
	SubjectPrefix      string        `envconfig:"BRIDGE_SUBJECT_PREFIX" default:"ccaas.agents" group:"nats" desc:"subject prefix: events go to <prefix>.<agentId>.<type>"`
	Stream             string        `envconfig:"BRIDGE_STREAM" default:"CCAAS_AGENTS" group:"nats" desc:"JetStream stream capturing <prefix>.>"`
	StreamMaxAge       time.Duration `envconfig:"BRIDGE_STREAM_MAX_AGE" default:"168h" group:"nats" desc:"how long the stream keeps events"`
	StreamReplicas     int           `envconfig:"BRIDGE_STREAM_REPLICAS" default:"1" group:"nats" desc:"stream replicas (3 on a cluster)"`
	StreamStorage      string        `envconfig:"BRIDGE_STREAM_STORAGE" default:"file" group:"nats" desc:"stream storage: file or memory"`
	StreamManage       bool          `envconfig:"BRIDGE_STREAM_MANAGE" default:"true" group:"nats" desc:"create and update the stream and the state bucket; false only verifies they exist and match"`
	DuplicateWindow    time.Duration `envconfig:"BRIDGE_DUPLICATE_WINDOW" default:"2m" group:"nats" desc:"stream duplicate window: retries of a publish within it are acknowledged as duplicates (correctness does not depend on it: every event is fenced)"`
	PublishMaxPending  int           `envconfig:"BRIDGE_PUBLISH_MAX_PENDING" default:"1024" group:"nats" desc:"events published but not yet acknowledged, at most; when full, polling waits"`
	PublishTimeout     time.Duration `envconfig:"BRIDGE_PUBLISH_TIMEOUT" default:"5s" group:"nats" desc:"how long to wait for one publish acknowledgement before retrying"`

	// High availability.
	LeaseEnabled bool          `envconfig:"BRIDGE_LEASE_ENABLED" default:"true" group:"ha" desc:"take a leader lease before polling, so only one replica polls each shard"`
	LeaseBucket  string        `envconfig:"BRIDGE_LEASE_BUCKET" default:"ccaas_bridge_leases" group:"ha" desc:"JetStream key-value bucket holding the leases"`
	LeaseTTL     time.Duration `envconfig:"BRIDGE_LEASE_TTL" default:"15s" group:"ha" desc:"a lease not renewed for this long passes to a standby"`
	ShardCount   int           `envconfig:"BRIDGE_SHARD_COUNT" default:"1" group:"ha" desc:"shards of the agent list, each with its own lease"`
	InstanceID   string        `envconfig:"BRIDGE_INSTANCE_ID" group:"ha" desc:"this replica's name in the lease (default: host name and process ID)"`

	// Operations.
	HTTPAddr        string        `envconfig:"BRIDGE_HTTP_ADDR" default:":8080" group:"ops" desc:"address of /metrics, /healthz and /readyz (empty: off)"`
	LogFormat       string        `envconfig:"BRIDGE_LOG_FORMAT" default:"json" group:"ops" desc:"log format: json or text"`
	LogLevel        string        `envconfig:"BRIDGE_LOG_LEVEL" default:"info" group:"ops" desc:"log level: debug, info, warn or error"`
	ShutdownTimeout time.Duration `envconfig:"BRIDGE_SHUTDOWN_TIMEOUT" default:"30s" group:"ops" desc:"on SIGTERM, how long to flush in-flight events before exiting"`
	Pprof           bool          `envconfig:"BRIDGE_PPROF" default:"false" group:"ops" desc:"serve Go's runtime profiles (CPU, heap, goroutines) under /debug/pprof/ on BRIDGE_HTTP_ADDR"`
}

// Needs says which parts of the configuration a subcommand uses, so that
// only those are required and checked.
type Needs struct {
	// Organisation requires BRIDGE_ORG_URL, a token source and the agents.
	Organisation bool
}

// FieldError is a problem with one environment variable.
type FieldError struct {
	// Var is the variable's name, e.g. BRIDGE_POLL_INTERVAL.
	Var string
	// Problem says what is wrong, including the offending value unless the
	// variable holds a secret.
	Problem string
}

// Error returns "<variable>: <problem>".
func (e *FieldError) Error() string { return e.Var + ": " + e.Problem }

// secretVars are never echoed in errors.
var secretVars = map[string]bool{
	"BRIDGE_TOKEN":         true,
	"BRIDGE_NATS_PASSWORD": true,
	"BRIDGE_NATS_TOKEN":    true,
}

// Load reads the process environment and validates the result for what
// needs says is used. The returned error joins one *FieldError per problem.
func Load(needs Needs) (Config, error) {
	var c Config
	if err := envconfig.Process("", &c); err != nil {
		var pe *envconfig.ParseError
		if errors.As(err, &pe) {
			value := fmt.Sprintf("%q", pe.Value)
			if secretVars[pe.KeyName] {
				value = "(value hidden)"
			}
			return c, &FieldError{Var: pe.KeyName, Problem: fmt.Sprintf("cannot parse %s as %s", value, describeType(pe.TypeName))}
		}
		return c, fmt.Errorf("read environment: %w", err)
	}
	return c, c.Validate(needs)
}

func describeType(t string) string {
	switch t {
	case "Duration", "time.Duration":
		return "a duration (for example 10s, 5m, 1h30m)"
	case "bool":
		return "a boolean (true or false)"
	case "int":
		return "an integer"
	case "float64":
		return "a number"
	}
	return t
}

var (
	guidRE       = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
	subjectTokRE = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)
	nameRE       = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)
)

// IsGUID reports whether s is a GUID in its 8-4-4-4-12 hexadecimal form.
func IsGUID(s string) bool { return guidRE.MatchString(s) }

// NormalizeAgentID returns an agent ID in the contract's form (a lower-case
// 8-4-4-4-12 GUID) and true, accepting the braces Dataverse shows around
// GUIDs ({394382B6-A4D4-EE11-904C-00224808A166}) and white space around
// it; false when s is not a GUID.
func NormalizeAgentID(s string) (string, bool) {
	s = strings.TrimSpace(s)
	if len(s) == 38 && s[0] == '{' && s[37] == '}' {
		s = s[1:37]
	}
	if !IsGUID(s) {
		return "", false
	}
	return strings.ToLower(s), true
}

// Validate checks every value, normalises agent IDs to lower case, and
// returns one *FieldError per problem, joined.
func (c *Config) Validate(needs Needs) error {
	var errs []error
	bad := func(v, format string, args ...any) {
		errs = append(errs, &FieldError{Var: v, Problem: fmt.Sprintf(format, args...)})
	}
	positive := func(v string, d time.Duration) {
		if d <= 0 {
			bad(v, "must be a duration greater than zero (got %s)", d)
		}
	}
	notNegative := func(v string, d time.Duration) {
		if d < 0 {
			bad(v, "must not be negative (got %s)", d)
		}
	}
	readable := func(v, path string) {
		if path == "" {
			return
		}
		f, err := os.Open(path)
		if err != nil {
			bad(v, "cannot read file %q: %v", path, errors.Unwrap(err))
			return
		}
		f.Close()
	}

	positive("BRIDGE_POLL_INTERVAL", c.PollInterval)
	positive("BRIDGE_REQUEST_TIMEOUT", c.RequestTimeout)
	positive("BRIDGE_BACKOFF_MAX", c.BackoffMax)
	positive("BRIDGE_PERMANENT_RETRY", c.PermanentRetry)
	positive("BRIDGE_PRESENCE_CATALOG_REFRESH", c.PresenceCatalogRefresh)
	positive("BRIDGE_STREAM_MAX_AGE", c.StreamMaxAge)
	positive("BRIDGE_DUPLICATE_WINDOW", c.DuplicateWindow)
	positive("BRIDGE_PUBLISH_TIMEOUT", c.PublishTimeout)
	positive("BRIDGE_LEASE_TTL", c.LeaseTTL)
	positive("BRIDGE_FEED_INTERVAL", c.FeedInterval)
	positive("BRIDGE_SHUTDOWN_TIMEOUT", c.ShutdownTimeout)
	notNegative("BRIDGE_STALE_AFTER", c.StaleAfter)
	notNegative("BRIDGE_SNAPSHOT_INTERVAL", c.SnapshotInterval)
	if c.MaxConcurrency < 1 {
		bad("BRIDGE_MAX_CONCURRENCY", "must be at least 1 (got %d)", c.MaxConcurrency)
	}
	if c.MaxRPS < 0 {
		bad("BRIDGE_MAX_RPS", "must be 0 (no cap) or a positive rate (got %v)", c.MaxRPS)
	}
	if c.PublishMaxPending < 1 {
		bad("BRIDGE_PUBLISH_MAX_PENDING", "must be at least 1 (got %d)", c.PublishMaxPending)
	}
	if c.StreamReplicas < 1 || c.StreamReplicas > 5 {
		bad("BRIDGE_STREAM_REPLICAS", "must be between 1 and 5 (got %d)", c.StreamReplicas)
	}
	if c.ShardCount < 1 {
		bad("BRIDGE_SHARD_COUNT", "must be at least 1 (got %d)", c.ShardCount)
	}
	if c.DuplicateWindow > c.StreamMaxAge {
		bad("BRIDGE_DUPLICATE_WINDOW", "must not exceed BRIDGE_STREAM_MAX_AGE (%s > %s)", c.DuplicateWindow, c.StreamMaxAge)
	}
	switch c.StreamStorage {
	case "file", "memory":
	default:
		bad("BRIDGE_STREAM_STORAGE", "must be file or memory (got %q)", c.StreamStorage)
	}
	switch c.LogFormat {
	case "json", "text":
	default:
		bad("BRIDGE_LOG_FORMAT", "must be json or text (got %q)", c.LogFormat)
	}
	switch strings.ToLower(c.LogLevel) {
	case "debug", "info", "warn", "error":
	default:
		bad("BRIDGE_LOG_LEVEL", "must be debug, info, warn or error (got %q)", c.LogLevel)
	}
	for _, tok := range strings.Split(c.SubjectPrefix, ".") {
		if !subjectTokRE.MatchString(tok) {
			bad("BRIDGE_SUBJECT_PREFIX", "must be dot-separated tokens of letters, digits, '-' or '_' without wildcards (got %q)", c.SubjectPrefix)
			break
		}
	}
	for v, name := range map[string]string{"BRIDGE_STREAM": c.Stream, "BRIDGE_STATE_BUCKET": c.StateBucket, "BRIDGE_LEASE_BUCKET": c.LeaseBucket, "BRIDGE_FEED_BUCKET": c.FeedBucket} {
		if !nameRE.MatchString(name) {
			bad(v, "must be letters, digits, '-' or '_' (got %q)", name)
		}
	}
	if c.HTTPAddr != "" {
		if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
			bad("BRIDGE_HTTP_ADDR", "must be host:port or :port (got %q)", c.HTTPAddr)
		}
	}
	if _, _, err := net.SplitHostPort(c.EmbeddedNATSListen); err != nil {
		bad("BRIDGE_EMBEDDED_NATS_LISTEN", "must be host:port (got %q)", c.EmbeddedNATSListen)
	}
	if c.NATSURL != "" {
		for _, s := range strings.Split(c.NATSURL, ",") {
			u, err := url.Parse(strings.TrimSpace(s))
			if err != nil || u.Scheme == "" || u.Host == "" {
				bad("BRIDGE_NATS_URL", "each server must be a URL with a scheme and host, such as nats://nats:4222 (got %q)", redactURL(s))
				break
			}
			switch u.Scheme {
			case "nats", "tls", "ws", "wss":
			default:
				bad("BRIDGE_NATS_URL", "scheme must be nats, tls, ws or wss (got %q)", u.Scheme)
			}
		}
	}
	readable("BRIDGE_NATS_CREDS", c.NATSCreds)
	readable("BRIDGE_NATS_NKEY", c.NATSNKey)
	readable("BRIDGE_NATS_CA", c.NATSCA)
	readable("BRIDGE_NATS_CERT", c.NATSCert)
	readable("BRIDGE_NATS_KEY", c.NATSKey)
	if (c.NATSCert == "") != (c.NATSKey == "") {
		bad("BRIDGE_NATS_CERT", "BRIDGE_NATS_CERT and BRIDGE_NATS_KEY must be set together")
	}
	if c.NATSPassword != "" && c.NATSUser == "" {
		bad("BRIDGE_NATS_PASSWORD", "is set but BRIDGE_NATS_USER is not")
	}

	if c.OrgURL != "" || needs.Organisation {
		u, err := url.Parse(c.OrgURL)
		switch {
		case c.OrgURL == "":
			bad("BRIDGE_ORG_URL", "is required: the Dynamics 365 organisation URL, such as https://contoso.crm.dynamics.com")
		case err != nil || u.Scheme == "" || u.Host == "":
			bad("BRIDGE_ORG_URL", "must be an absolute URL with a scheme, such as https://contoso.crm.dynamics.com (got %q)", redactURL(c.OrgURL))
		case u.User != nil:
			bad("BRIDGE_ORG_URL", "must not contain user information (got %q): the bearer token authenticates, and the URL is copied into every event's source", redactURL(c.OrgURL))
		case u.Scheme != "https" && !(u.Scheme == "http" && isLoopback(u.Hostname())):
			bad("BRIDGE_ORG_URL", "scheme must be https, so the bearer token never travels in clear text; http is accepted only for a loopback host such as the simulator (got %q)", redactURL(c.OrgURL))
		case u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
			bad("BRIDGE_ORG_URL", "must not have a query or fragment (got %q)", c.OrgURL)
		case strings.Contains(strings.ToLower(u.Path), "/api/data"):
			bad("BRIDGE_ORG_URL", "must be the organisation URL alone: drop %q (got %q; the bridge adds /api/data/v9.2 itself)", u.Path, c.OrgURL)
		case strings.Trim(u.Path, "/") != "":
			bad("BRIDGE_ORG_URL", "must be the organisation URL without a path, such as https://contoso.crm.dynamics.com (got %q)", c.OrgURL)
		default:
			c.OrgURL = strings.TrimRight(c.OrgURL, "/")
		}
	}
	switch strings.ToLower(c.PresenceCall) {
	case "auto", "bare", "function":
		c.PresenceCall = strings.ToLower(c.PresenceCall)
	default:
		bad("BRIDGE_PRESENCE_CALL", "must be auto, bare or function (got %q)", c.PresenceCall)
	}
	switch strings.ToLower(c.QuotaScope) {
	case "agent", "caller":
		c.QuotaScope = strings.ToLower(c.QuotaScope)
	default:
		bad("BRIDGE_QUOTA_SCOPE", "must be agent or caller (got %q)", c.QuotaScope)
	}
	switch strings.ToLower(c.Feed) {
	case "off", "on", "auto":
		c.Feed = strings.ToLower(c.Feed)
	default:
		bad("BRIDGE_FEED", "must be off, on or auto (got %q)", c.Feed)
	}
	if c.ReadyMinShare < 0 || c.ReadyMinShare > 1 {
		bad("BRIDGE_READY_MIN_SHARE", "must be between 0 and 1 (got %v)", c.ReadyMinShare)
	}
	if strings.HasPrefix(strings.ToLower(strings.TrimSpace(c.Token)), "bearer ") {
		bad("BRIDGE_TOKEN", "must be the token alone: remove the 'Bearer ' prefix (value hidden)")
	}
	if c.Token != "" && c.TokenFile != "" {
		bad("BRIDGE_TOKEN_FILE", "set only one of BRIDGE_TOKEN and BRIDGE_TOKEN_FILE")
	}
	readable("BRIDGE_TOKEN_FILE", c.TokenFile)
	if len(c.AgentIDs) > 0 && c.AgentIDsFile != "" {
		bad("BRIDGE_AGENT_IDS_FILE", "set only one of BRIDGE_AGENT_IDS and BRIDGE_AGENT_IDS_FILE")
	}
	readable("BRIDGE_AGENT_IDS_FILE", c.AgentIDsFile)
	ids := make([]string, 0, len(c.AgentIDs))
	seen := make(map[string]bool, len(c.AgentIDs))
	listed := false
	for _, raw := range c.AgentIDs {
		raw = strings.TrimSpace(raw)
		if raw == "" {
			continue
		}
		listed = true
		id, ok := NormalizeAgentID(raw)
		if !ok {
			bad("BRIDGE_AGENT_IDS", "%q is not a GUID (expected the form 394382b6-a4d4-ee11-904c-00224808a166, braces allowed)", raw)
			continue
		}
		if seen[id] {
			bad("BRIDGE_AGENT_IDS", "agent %s is listed twice", id)
			continue
		}
		seen[id] = true
		ids = append(ids, id)
	}
	c.AgentIDs = ids
	// Set but invalid is reported above, not as missing too.
	if needs.Organisation && !listed && c.AgentIDsFile == "" {
		bad("BRIDGE_AGENT_IDS", "is required (or BRIDGE_AGENT_IDS_FILE): the agents to poll, comma-separated GUIDs")
	}
	return errors.Join(errs...)
}

// EffectiveStaleAfter is BRIDGE_STALE_AFTER, or when it is zero three poll
// intervals plus the backoff cap.
func (c *Config) EffectiveStaleAfter() time.Duration {
	if c.StaleAfter > 0 {
		return c.StaleAfter
	}
	return 3*c.PollInterval + c.BackoffMax
}

// isLoopback reports whether host is localhost or a loopback address.
func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Embedded reports whether the bridge runs its own in-process NATS server.
func (c *Config) Embedded() bool { return c.NATSURL == "" }

// redactURL drops any user information from a URL before it is echoed.
func redactURL(s string) string {
	u, err := url.Parse(strings.TrimSpace(s))
	if err != nil || u.User == nil {
		if i := strings.LastIndex(s, "@"); i >= 0 {
			return "…" + s[i:]
		}
		return s
	}
	u.User = url.User("REDACTED")
	return u.String()
}

// Var describes one environment variable of the bridge.
type Var struct {
	// Name is the variable, e.g. BRIDGE_POLL_INTERVAL.
	Name string
	// Group is what it configures: org, poll, detect, nats, ha or ops.
	Group string
	// Default is the value used when it is unset ("" for none).
	Default string
	// Description says what it does.
	Description string
}

// Vars lists every variable the bridge reads, in declaration order.
func Vars() []Var {
	t := reflect.TypeOf(Config{})
	out := make([]Var, 0, t.NumField())
	for i := range t.NumField() {
		tag := t.Field(i).Tag
		out = append(out, Var{Name: tag.Get("envconfig"), Group: tag.Get("group"), Default: tag.Get("default"), Description: tag.Get("desc")})
	}
	return out
}
