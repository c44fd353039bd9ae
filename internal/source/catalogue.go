package source

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// The base presence statuses every presence maps to, and their Dataverse
// option values (msdyn_basepresencestatus).
const (
	BaseAvailable = "Available"  // 192360000
	BaseBusy      = "Busy"       // 192360001
	BaseBusyDND   = "Busy - DND" // 192360002
	BaseAway      = "Away"       // 192360003
	BaseOffline   = "Offline"    // 192360004
	// BaseInactive is the sixth out-of-box presence, set by the system when
	// an agent misses notifications. Its ID differs between organisations:
	// the catalogue (msdyn_presences) supplies it.
	BaseInactive = "Inactive" // 192360005
)

// baseStatusFirstOption is the option value of BaseAvailable; the others
// follow in the order of baseStatuses.
const baseStatusFirstOption = 192360000

var baseStatuses = [...]string{BaseAvailable, BaseBusy, BaseBusyDND, BaseAway, BaseOffline, BaseInactive}

// BaseStatusForOption returns the base status of a msdyn_basepresencestatus
// option value.
func BaseStatusForOption(v int) (string, bool) {
	i := v - baseStatusFirstOption
	if i < 0 || i >= len(baseStatuses) {
		return "", false
	}
	return baseStatuses[i], true
}

// ParseBaseStatus accepts a base status by name (case, spaces and dashes
// ignored: "busy - dnd", "BusyDND") or by option value ("192360002").
func ParseBaseStatus(s string) (string, bool) {
	s = strings.TrimSpace(s)
	if v, err := strconv.Atoi(s); err == nil {
		return BaseStatusForOption(v)
	}
	key := squash(s)
	for _, b := range baseStatuses {
		if squash(b) == key {
			return b, true
		}
	}
	return "", false
}

func squash(s string) string {
	return strings.Map(func(r rune) rune {
		if r == ' ' || r == '-' || r == '_' {
			return -1
		}
		return r
	}, strings.ToLower(s))
}

// BuiltinPresences are the five out-of-box presences of every Dynamics 365
// Contact Center organisation, by msdyn_presenceid.
func BuiltinPresences() []Presence {
	return []Presence{
		{ID: "f523f628-c07a-e811-8162-000d3aa11f50", Name: "Available", BaseStatus: BaseAvailable},
		{ID: "efdeb843-c07a-e811-8162-000d3aa11f50", Name: "Busy", BaseStatus: BaseBusy},
		{ID: "08971864-c07a-e811-8162-000d3aa11f50", Name: "Busy - DND", BaseStatus: BaseBusyDND},
		{ID: "3dacae76-c07a-e811-8162-000d3aa11f50", Name: "Away", BaseStatus: BaseAway},
		{ID: "70139190-c07a-e811-8162-000d3aa11f50", Name: "Offline", BaseStatus: BaseOffline},
	}
}

// Presence is one row of the presence catalogue.
type Presence struct {
	// ID is the msdyn_presenceid, lower-case GUID.
	ID string
	// Name is msdyn_name.
	Name string
	// BaseStatus is the base status it maps to.
	BaseStatus string
}

// ParsePresenceMap parses BRIDGE_PRESENCE_MAP: comma-separated
// "<presenceId>=<BaseStatus>" pairs, the base status by name or option
// value, e.g. "4f6b...=Away,9c1d...=192360001". Empty input gives an empty
// map.
func ParsePresenceMap(s string) (map[string]string, error) {
	out := map[string]string{}
	if strings.TrimSpace(s) == "" {
		return out, nil
	}
	for i, pair := range strings.Split(s, ",") {
		id, base, ok := strings.Cut(pair, "=")
		if !ok {
			return nil, fmt.Errorf("presence map entry %d %q: want <presenceId>=<BaseStatus>", i+1, pair)
		}
		gid, ok := NormalizeGUID(strings.TrimSpace(id))
		if !ok {
			return nil, fmt.Errorf("presence map entry %d %q: %q is not a GUID", i+1, pair, strings.TrimSpace(id))
		}
		b, ok := ParseBaseStatus(base)
		if !ok {
			return nil, fmt.Errorf("presence map entry %d %q: %q is not a base status (Available, Busy, Busy - DND, Away, Offline, Inactive or 192360000-192360005)", i+1, pair, strings.TrimSpace(base))
		}
		if _, dup := out[gid]; dup {
			return nil, fmt.Errorf("presence map entry %d %q: presence %s mapped twice", i+1, pair, gid)
		}
		out[gid] = b
	}
	return out, nil
}

// Catalogue resolves presence IDs to base statuses. Lookups are lock-free;
// overrides win over presences loaded from Dataverse, which win over the
// built-in ones.
type Catalogue struct {
	overrides map[string]string
	current   atomic.Pointer[map[string]string]
	names     atomic.Pointer[map[string]string]
}

// Name returns the display name of presenceID (a lower-case GUID), or ""
// when it is unknown.
func (c *Catalogue) Name(presenceID string) string {
	if c == nil {
		for _, p := range BuiltinPresences() {
			if p.ID == presenceID {
				return p.Name
			}
		}
		return ""
	}
	return (*c.names.Load())[presenceID]
}

// NewCatalogue returns a catalogue of the built-in presences plus the given
// overrides (from ParsePresenceMap; may be nil).
func NewCatalogue(overrides map[string]string) *Catalogue {
	c := &Catalogue{overrides: maps.Clone(overrides)}
	c.Set(nil)
	return c
}

// BaseStatus returns the base status of presenceID (a lower-case GUID), or
// "" when it is unknown.
func (c *Catalogue) BaseStatus(presenceID string) string {
	if c == nil {
		for _, p := range BuiltinPresences() {
			if p.ID == presenceID {
				return p.BaseStatus
			}
		}
		return ""
	}
	return (*c.current.Load())[presenceID]
}

// Set replaces the presences loaded from Dataverse.
func (c *Catalogue) Set(loaded []Presence) {
	m := make(map[string]string, len(loaded)+5+len(c.overrides))
	names := make(map[string]string, len(loaded)+5)
	for _, p := range BuiltinPresences() {
		m[p.ID], names[p.ID] = p.BaseStatus, p.Name
	}
	for _, p := range loaded {
		if p.BaseStatus != "" {
			m[p.ID] = p.BaseStatus
		}
		if p.Name != "" {
			names[p.ID] = p.Name
		}
	}
	maps.Copy(m, c.overrides)
	c.names.Store(&names)
	c.current.Store(&m)
}

// Len returns the number of presences the catalogue knows.
func (c *Catalogue) Len() int { return len(*c.current.Load()) }

// PresenceLister reads the msdyn_presences table; *Client implements it.
type PresenceLister interface {
	ListPresences(ctx context.Context) ([]Presence, error)
}

// CatalogueRefresher keeps a Catalogue loaded from Dataverse: Load once at
// start, so the first events carry base statuses, then Run to reload it
// every Every.
type CatalogueRefresher struct {
	// Catalogue is updated on every successful load.
	Catalogue *Catalogue
	// Lister reads the table.
	Lister PresenceLister
	// Every is the refresh interval (BRIDGE_PRESENCE_CATALOG_REFRESH);
	// default DefaultCatalogueRefresh.
	Every time.Duration
	// Logger receives a line per failed load and per change of the number
	// of presences.
	Logger *slog.Logger
	// Metrics counts loads.
	Metrics *Metrics
}

// DefaultCatalogueRefresh is how often the presence catalogue is re-read
// when CatalogueRefresher.Every is zero.
const DefaultCatalogueRefresh = time.Hour

// Load reads the table once and updates the catalogue. On error the
// catalogue keeps what it had.
func (r *CatalogueRefresher) Load(ctx context.Context) error {
	ps, err := r.Lister.ListPresences(ctx)
	r.Metrics.catalogueLoad(err)
	if err != nil {
		return fmt.Errorf("load presence catalogue: %w", err)
	}
	before := r.Catalogue.Len()
	r.Catalogue.Set(ps)
	if after := r.Catalogue.Len(); after != before && r.Logger != nil {
		r.Logger.Info("presence catalogue loaded", "presences", after, "from_dataverse", len(ps))
	}
	return nil
}

// Run reloads the table every Every until ctx is done; the load at start is
// Load's, so Run's first load is one period later. Failures are logged (the
// organisation may not grant the read; BRIDGE_PRESENCE_MAP then covers
// custom presences) and retried at the next refresh.
func (r *CatalogueRefresher) Run(ctx context.Context) {
	every := r.Every
	if every <= 0 {
		every = DefaultCatalogueRefresh
	}
	log := r.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := r.Load(ctx); err != nil && ctx.Err() == nil {
			log.Warn("presence catalogue not loaded; using built-in presences and BRIDGE_PRESENCE_MAP", "err", err)
		}
	}
}
