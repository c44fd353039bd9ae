// Package config reads every BRIDGE_ environment variable of the bridge with
// envconfig and validates it once, before anything starts. Every problem is
// reported as a *FieldError naming the variable and what is wrong with its
// value; values of secret variables are never echoed.
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
	OrgURL       string   `envconfig:"BRIDGE_ORG_URL"`
	AgentIDs     []string `envconfig:"BRIDGE_AGENT_IDS"`
	AgentIDsFile string   `envconfig:"BRIDGE_AGENT_IDS_FILE"`
	Token        string   `envconfig:"BRIDGE_TOKEN"`
	TokenFile    string   `envconfig:"BRIDGE_TOKEN_FILE"`

	// Polling.
	PollInterval           time.Duration `envconfig:"BRIDGE_POLL_INTERVAL" default:"10s"`
	RequestTimeout         time.Duration `envconfig:"BRIDGE_REQUEST_TIMEOUT" default:"5s"`
	MaxConcurrency         int           `envconfig:"BRIDGE_MAX_CONCURRENCY" default:"32"`
	MaxRPS                 float64       `envconfig:"BRIDGE_MAX_RPS" default:"0"`
	BackoffMax             time.Duration `envconfig:"BRIDGE_BACKOFF_MAX" default:"2m"`
	PermanentRetry         time.Duration `envconfig:"BRIDGE_PERMANENT_RETRY" default:"5m"`
	PresenceCatalogRefresh time.Duration `envconfig:"BRIDGE_PRESENCE_CATALOG_REFRESH" default:"1h"`
	PresenceMap            string        `envconfig:"BRIDGE_PRESENCE_MAP"`

	// Change detection.
	StateBucket      string        `envconfig:"BRIDGE_STATE_BUCKET" default:"ccaas_agents"`
	StaleAfter       time.Duration `envconfig:"BRIDGE_STALE_AFTER" default:"0"`
	SnapshotInterval time.Duration `envconfig:"BRIDGE_SNAPSHOT_INTERVAL" default:"0"`

	// NATS and JetStream.
	NATSURL            string        `envconfig:"BRIDGE_NATS_URL"`
	NATSCreds          string        `envconfig:"BRIDGE_NATS_CREDS"`
	NATSNKey           string        `envconfig:"BRIDGE_NATS_NKEY"`
	NATSUser           string        `envconfig:"BRIDGE_NATS_USER"`
	NATSPassword       string        `envconfig:"BRIDGE_NATS_PASSWORD"`
	NATSToken          string        `envconfig:"BRIDGE_NATS_TOKEN"`
	NATSCA             string        `envconfig:"BRIDGE_NATS_CA"`
	NATSCert           string        `envconfig:"BRIDGE_NATS_CERT"`
	NATSKey            string        `envconfig:"BRIDGE_NATS_KEY"`
	DataDir            string        `envconfig:"BRIDGE_DATA_DIR" default:"./data"`
	EmbeddedNATSListen string        `envconfig:"BRIDGE_EMBEDDED_NATS_LISTEN" default:"127.0.0.1:4222"`
	SubjectPrefix      string        `envconfig:"BRIDGE_SUBJECT_PREFIX" default:"ccaas.agents"`
	Stream             string        `envconfig:"BRIDGE_STREAM" default:"CCAAS_AGENTS"`
	StreamMaxAge       time.Duration `envconfig:"BRIDGE_STREAM_MAX_AGE" default:"168h"`
	StreamReplicas     int           `envconfig:"BRIDGE_STREAM_REPLICAS" default:"1"`
	StreamStorage      string        `envconfig:"BRIDGE_STREAM_STORAGE" default:"file"`
	StreamManage       bool          `envconfig:"BRIDGE_STREAM_MANAGE" default:"true"`
	DuplicateWindow    time.Duration `envconfig:"BRIDGE_DUPLICATE_WINDOW" default:"2m"`
	PublishMaxPending  int           `envconfig:"BRIDGE_PUBLISH_MAX_PENDING" default:"1024"`
	PublishTimeout     time.Duration `envconfig:"BRIDGE_PUBLISH_TIMEOUT" default:"5s"`

	// High availability.
	LeaseEnabled bool          `envconfig:"BRIDGE_LEASE_ENABLED" default:"true"`
	LeaseBucket  string        `envconfig:"BRIDGE_LEASE_BUCKET" default:"ccaas_bridge_leases"`
	LeaseTTL     time.Duration `envconfig:"BRIDGE_LEASE_TTL" default:"15s"`
	ShardCount   int           `envconfig:"BRIDGE_SHARD_COUNT" default:"1"`
	InstanceID   string        `envconfig:"BRIDGE_INSTANCE_ID"`

	// Operations.
	HTTPAddr        string        `envconfig:"BRIDGE_HTTP_ADDR" default:":8080"`
	LogFormat       string        `envconfig:"BRIDGE_LOG_FORMAT" default:"json"`
	LogLevel        string        `envconfig:"BRIDGE_LOG_LEVEL" default:"info"`
	ShutdownTimeout time.Duration `envconfig:"BRIDGE_SHUTDOWN_TIMEOUT" default:"30s"`
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
	for v, name := range map[string]string{"BRIDGE_STREAM": c.Stream, "BRIDGE_STATE_BUCKET": c.StateBucket, "BRIDGE_LEASE_BUCKET": c.LeaseBucket} {
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
			bad("BRIDGE_ORG_URL", "must be an absolute URL with a scheme, such as https://contoso.crm.dynamics.com (got %q)", c.OrgURL)
		case u.Scheme != "https" && u.Scheme != "http":
			bad("BRIDGE_ORG_URL", "scheme must be https (got %q)", u.Scheme)
		default:
			c.OrgURL = strings.TrimRight(c.OrgURL, "/")
		}
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
	for _, id := range c.AgentIDs {
		id = strings.TrimSpace(id)
		if id == "" {
			continue
		}
		if !IsGUID(id) {
			bad("BRIDGE_AGENT_IDS", "%q is not a GUID (expected the form 394382b6-a4d4-ee11-904c-00224808a166)", id)
			continue
		}
		id = strings.ToLower(id)
		if seen[id] {
			bad("BRIDGE_AGENT_IDS", "agent %s is listed twice", id)
			continue
		}
		seen[id] = true
		ids = append(ids, id)
	}
	c.AgentIDs = ids
	if needs.Organisation && len(c.AgentIDs) == 0 && c.AgentIDsFile == "" {
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

// Vars lists every variable the bridge reads, in declaration order.
func Vars() []string {
	t := reflect.TypeOf(Config{})
	out := make([]string, 0, t.NumField())
	for i := range t.NumField() {
		out = append(out, t.Field(i).Tag.Get("envconfig"))
	}
	return out
}
