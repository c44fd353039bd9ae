package simulator

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The agent-status tables of Dynamics 365 Contact Center, as Microsoft's
// entity reference names them: msdyn_agentstatus ("holds agent's status or
// presence details", one row per agent) and msdyn_agentstatushistory
// ("records any changes to agent's presence or available capacity", one row
// per change). Lookups travel as _<column>_value, as the Web API returns
// them.
var (
	statusColumns = []string{"msdyn_agentstatusid", "_msdyn_agentid_value", "_msdyn_currentpresenceid_value",
		"msdyn_presencemodifiedon", "createdon", "modifiedon"}
	historyColumns = []string{"msdyn_agentstatushistoryid", "_msdyn_agentid_value", "_msdyn_presenceid_value",
		"msdyn_starttime", "msdyn_endtime", "createdon", "modifiedon"}
)

// defaultMaxPageSize is Dataverse's page size without Prefer:
// odata.maxpagesize.
const defaultMaxPageSize = 5000

// maxHistoryRows bounds the history table: the oldest rows go first.
const maxHistoryRows = 200000

// historyRow is one msdyn_agentstatushistory row.
type historyRow struct {
	id, agentID, presenceID string
	start, created          time.Time
	end, modified           time.Time // end zero while current
}

// statusVersion is one state of an agent's msdyn_agentstatus row, visible
// from modified on.
type statusVersion struct {
	presenceID                 string
	presenceModified, modified time.Time
}

type statusRow struct {
	id, agentID string
	created     time.Time
	versions    []statusVersion
}

// feedTables holds the agent-status tables; guarded by Simulator.mu.
type feedTables struct {
	n       uint64
	history []*historyRow // by created, then id
	current map[string]*historyRow
	status  map[string]*statusRow
	order   []string
}

// rowID returns a GUID for the table's n-th row, stable for a seed-free run.
func rowID(table byte, n uint64) string {
	return fmt.Sprintf("%08x-%04x-4%03x-8000-%012x", uint32(n>>16), uint16(n), table, n)
}

// record writes the rows of a change, lag after it: a new history row and a
// new version of the status row when the presence changed (or the agent was
// added). Guarded by Simulator.mu.
func (f *feedTables) record(c Change, lag time.Duration) {
	if c.Kind == KindRemoved || !c.Fields.Has(FieldPresence) {
		return
	}
	if f.current == nil {
		f.current, f.status = map[string]*historyRow{}, map[string]*statusRow{}
	}
	written := c.At.Add(lag)
	if prev := f.current[c.AgentID]; prev != nil {
		prev.end, prev.modified = c.At, written
	}
	f.n++
	h := &historyRow{id: rowID(1, f.n), agentID: c.AgentID, presenceID: c.State.PresenceID, start: c.At, created: written, modified: written}
	f.history = append(f.history, h)
	if len(f.history) > maxHistoryRows {
		f.history = slices.Delete(f.history, 0, len(f.history)-maxHistoryRows)
	}
	f.current[c.AgentID] = h
	st := f.status[c.AgentID]
	if st == nil {
		st = &statusRow{id: rowID(2, f.n), agentID: c.AgentID, created: written}
		f.status[c.AgentID] = st
		f.order = append(f.order, c.AgentID)
	}
	// Versions written before this change are visible now or never will
	// be again: keep the last of them.
	keep := 0
	for i, v := range st.versions {
		if !v.modified.After(c.At) {
			keep = i
		}
	}
	st.versions = append(st.versions[keep:], statusVersion{presenceID: c.State.PresenceID, presenceModified: c.At, modified: written})
}

// rows returns the table's rows visible at now, as column values; history
// rows created before from (a bound the query's filter implies) are left
// out.
func (f *feedTables) rows(table string, now, from time.Time) []map[string]any {
	var out []map[string]any
	if table == EndpointAgentStatusHistories {
		createdBy := func(t time.Time) int {
			n, _ := slices.BinarySearchFunc(f.history, t, func(h *historyRow, t time.Time) int {
				if h.created.After(t) {
					return 1
				}
				return -1
			})
			return n
		}
		lo, hi := 0, createdBy(now)
		if !from.IsZero() {
			lo = min(createdBy(from.Add(-time.Second)), hi)
		}
		for _, h := range f.history[lo:hi] {
			row := map[string]any{
				"msdyn_agentstatushistoryid": h.id, "_msdyn_agentid_value": h.agentID, "_msdyn_presenceid_value": h.presenceID,
				"msdyn_starttime": h.start, "msdyn_endtime": nil, "createdon": h.created, "modifiedon": h.created,
			}
			if !h.end.IsZero() && !h.modified.After(now) {
				row["msdyn_endtime"], row["modifiedon"] = h.end, h.modified
			}
			out = append(out, row)
		}
		return out
	}
	for _, id := range f.order {
		st := f.status[id]
		var v *statusVersion
		for i := range st.versions {
			if !st.versions[i].modified.After(now) {
				v = &st.versions[i]
			}
		}
		if v == nil {
			continue
		}
		out = append(out, map[string]any{
			"msdyn_agentstatusid": st.id, "_msdyn_agentid_value": st.agentID, "_msdyn_currentpresenceid_value": v.presenceID,
			"msdyn_presencemodifiedon": v.presenceModified, "createdon": st.created, "modifiedon": v.modified,
		})
	}
	return out
}

// SetFeedLag changes Options.FeedLag for the changes made from now on.
func (s *Simulator) SetFeedLag(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.opts.FeedLag = max(d, 0)
}

// serveFeed answers a query of one of the agent-status tables, as the
// application user (MSCRMCallerID optional), charged to its service
// protection.
func (s *Simulator) serveFeed(w http.ResponseWriter, r *http.Request, table string) {
	rec := Request{At: s.now(), Method: r.Method, Endpoint: table}
	if !s.gate(w, r, &rec, false) {
		return
	}
	v, ok := s.admitOrReject(w, &rec)
	if !ok {
		return
	}
	defer s.release(v)
	// Like the presence catalogue's fault answer, but with this table's
	// privilege name and its own 404 handling.
	if st := s.Faults().FeedStatus; st != 0 {
		rec.Reason = "feed-fault"
		code, msg := codeUnexpected, "An unexpected error occurred."
		switch st {
		case http.StatusForbidden:
			code, msg = codeForbidden, fmt.Sprintf("Principal user is missing prvRead%s privilege.", strings.TrimSuffix(strings.TrimSuffix(table, "es"), "s"))
		case http.StatusNotFound:
			code, msg = codeNoSegment, fmt.Sprintf("Resource not found for the segment '%s'.", table)
		case http.StatusTooManyRequests:
			setRetryAfter(w, &rec, s.Faults().RetryAfter, false)
			code, msg = codeQuotaRequests, "Number of requests exceeded the limit of 6000 over time window of 300 seconds."
		}
		s.writeError(w, &rec, st, code, msg)
		return
	}
	entity := "msdyn_agentstatus"
	columns := statusColumns
	if table == EndpointAgentStatusHistories {
		entity, columns = "msdyn_agentstatushistory", historyColumns
	}
	q := r.URL.Query()
	bad := func(msg string) {
		rec.Reason = "bad-query"
		s.writeError(w, &rec, http.StatusBadRequest, codeNoSegment, msg)
	}
	cols, msg := selectColumns(q, columns, entity)
	if msg != "" {
		bad(msg)
		return
	}
	var pred func(map[string]any) bool
	if f := q.Get("$filter"); f != "" {
		p, err := parseFilter(f, columns)
		if err != nil {
			bad(fmt.Sprintf("Invalid $filter on type 'Microsoft.Dynamics.CRM.%s': %s", entity, truncate(err.Error(), 200)))
			return
		}
		pred = p
	}
	var order []orderKey
	if o := q.Get("$orderby"); o != "" {
		for part := range strings.SplitSeq(o, ",") {
			f := strings.Fields(part)
			if len(f) == 0 || len(f) > 2 || !slices.Contains(columns, f[0]) || (len(f) == 2 && f[1] != "asc" && f[1] != "desc") {
				bad(fmt.Sprintf("Invalid $orderby clause '%s' on type 'Microsoft.Dynamics.CRM.%s'.", truncate(part, 100), entity))
				return
			}
			order = append(order, orderKey{col: f[0], desc: len(f) == 2 && f[1] == "desc"})
		}
	}
	pageSize := defaultMaxPageSize
	for _, pref := range r.Header.Values("Prefer") {
		for p := range strings.SplitSeq(pref, ",") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(p), "odata.maxpagesize="); ok {
				if n, err := strconv.Atoi(v); err == nil && n > 0 {
					pageSize = min(n, defaultMaxPageSize)
				}
			}
		}
	}
	offset := 0
	if tok := q.Get("$skiptoken"); tok != "" {
		b, err := base64.RawURLEncoding.DecodeString(tok)
		n, err2 := strconv.Atoi(string(b))
		if err != nil || err2 != nil || n < 0 {
			bad("The $skiptoken is not valid.")
			return
		}
		offset = n
	}

	s.mu.Lock()
	all := s.feed.rows(table, rec.At, createdFrom(q.Get("$filter")))
	s.mu.Unlock()
	var rows []map[string]any
	for _, row := range all {
		if pred == nil || pred(row) {
			rows = append(rows, row)
		}
	}
	if len(order) > 0 {
		slices.SortStableFunc(rows, func(a, b map[string]any) int {
			for _, k := range order {
				c := compareValues(a[k.col], b[k.col])
				if k.desc {
					c = -c
				}
				if c != 0 {
					return c
				}
			}
			return 0
		})
	}
	if top := q.Get("$top"); top != "" {
		n, err := strconv.Atoi(top)
		if err != nil || n < 0 {
			bad(fmt.Sprintf("Invalid value '%s' for $top.", truncate(top, 20)))
			return
		}
		rows = rows[:min(n, len(rows))]
	}
	offset = min(offset, len(rows))
	page := rows[offset:min(offset+pageSize, len(rows))]

	out := collection{context: orgURL(r) + APIPrefix + "$metadata#" + table, selected: q.Has("$select"),
		cols: cols, key: columns[0], rows: page, etag: 9100000 + offset}
	if next := offset + len(page); next < len(rows) {
		u := *r.URL
		nq := u.Query()
		nq.Set("$skiptoken", base64.RawURLEncoding.EncodeToString([]byte(strconv.Itoa(next))))
		u.RawQuery = nq.Encode()
		out.next = orgURL(r) + u.Path + "?" + u.RawQuery
	}
	if pageSize != defaultMaxPageSize {
		w.Header().Set("Preference-Applied", "odata.maxpagesize="+strconv.Itoa(pageSize))
	}
	s.writeOData(w, &rec, http.StatusOK, out.encode())
}

// createdFrom returns the lower bound on createdon that a filter starting
// with "createdon ge <time> and" (or made of that comparison alone)
// implies, or zero: only a bound every matching row meets.
func createdFrom(filter string) time.Time {
	toks := tokenize(filter)
	if len(toks) < 3 || toks[0] != "createdon" || (toks[1] != "ge" && toks[1] != "gt") || (len(toks) > 3 && toks[3] != "and") {
		return time.Time{}
	}
	depth := 0
	for _, tok := range toks {
		switch tok {
		case "(":
			depth++
		case ")":
			depth--
		case "or":
			if depth == 0 {
				return time.Time{} // (createdon ge t and a) or b: no bound
			}
		}
	}
	t, err := time.Parse(time.RFC3339Nano, toks[2])
	if err != nil {
		return time.Time{}
	}
	return t
}

type orderKey struct {
	col  string
	desc bool
}

// compareValues orders times, strings and nulls (first).
func compareValues(a, b any) int {
	switch x := a.(type) {
	case time.Time:
		if y, ok := b.(time.Time); ok {
			return x.Compare(y)
		}
		return 1
	case string:
		if y, ok := b.(string); ok {
			return strings.Compare(x, y)
		}
		return 1
	}
	if b == nil {
		return 0
	}
	return -1
}

// parseFilter parses the OData $filter subset Dataverse queries of these
// tables use: comparisons (eq, ne, gt, ge, lt, le) of a column with a
// date-time, a GUID, a quoted string or null, combined with and, or and
// parentheses.
func parseFilter(s string, columns []string) (func(map[string]any) bool, error) {
	p := &filterParser{toks: tokenize(s), columns: columns}
	f, err := p.or()
	if err != nil {
		return nil, err
	}
	if p.i != len(p.toks) {
		return nil, fmt.Errorf("unexpected %q", p.toks[p.i])
	}
	return f, nil
}

func tokenize(s string) []string {
	var out []string
	cur := strings.Builder{}
	flush := func() {
		if cur.Len() > 0 {
			out = append(out, cur.String())
			cur.Reset()
		}
	}
	inQuote := false
	for _, r := range s {
		switch {
		case r == '\'':
			inQuote = !inQuote
			cur.WriteRune(r)
		case inQuote:
			cur.WriteRune(r)
		case r == '(' || r == ')':
			flush()
			out = append(out, string(r))
		case r == ' ':
			flush()
		default:
			cur.WriteRune(r)
		}
	}
	flush()
	return out
}

type filterParser struct {
	toks    []string
	i       int
	columns []string
}

type predicate = func(map[string]any) bool

func (p *filterParser) peek() string {
	if p.i < len(p.toks) {
		return p.toks[p.i]
	}
	return ""
}

func (p *filterParser) or() (predicate, error) {
	l, err := p.and()
	if err != nil {
		return nil, err
	}
	for p.peek() == "or" {
		p.i++
		r, err := p.and()
		if err != nil {
			return nil, err
		}
		a, b := l, r
		l = func(m map[string]any) bool { return a(m) || b(m) }
	}
	return l, nil
}

func (p *filterParser) and() (predicate, error) {
	l, err := p.term()
	if err != nil {
		return nil, err
	}
	for p.peek() == "and" {
		p.i++
		r, err := p.term()
		if err != nil {
			return nil, err
		}
		a, b := l, r
		l = func(m map[string]any) bool { return a(m) && b(m) }
	}
	return l, nil
}

func (p *filterParser) term() (predicate, error) {
	if p.peek() == "(" {
		p.i++
		f, err := p.or()
		if err != nil {
			return nil, err
		}
		if p.peek() != ")" {
			return nil, errors.New("missing )")
		}
		p.i++
		return f, nil
	}
	if p.i+3 > len(p.toks) {
		return nil, errors.New("incomplete comparison")
	}
	col, op, lit := p.toks[p.i], p.toks[p.i+1], p.toks[p.i+2]
	p.i += 3
	if !slices.Contains(p.columns, col) {
		return nil, fmt.Errorf("could not find a property named '%s'", col)
	}
	var want any
	switch {
	case lit == "null":
	case strings.HasPrefix(lit, "'") && strings.HasSuffix(lit, "'") && len(lit) >= 2:
		want = strings.ToLower(lit[1 : len(lit)-1])
	default:
		if t, err := time.Parse(time.RFC3339Nano, lit); err == nil {
			want = t
		} else if id, ok := parseGUID(lit); ok {
			want = id
		} else {
			return nil, fmt.Errorf("literal %q is not a date-time, GUID, string or null", lit)
		}
	}
	var test func(int) bool
	switch op {
	case "eq":
		test = func(c int) bool { return c == 0 }
	case "ne":
		test = func(c int) bool { return c != 0 }
	case "gt":
		test = func(c int) bool { return c > 0 }
	case "ge":
		test = func(c int) bool { return c >= 0 }
	case "lt":
		test = func(c int) bool { return c < 0 }
	case "le":
		test = func(c int) bool { return c <= 0 }
	default:
		return nil, fmt.Errorf("unknown operator %q", op)
	}
	return func(m map[string]any) bool {
		v := m[col]
		if t, ok := v.(time.Time); ok {
			v = t.Truncate(time.Second) // compared as Dataverse stores them
		}
		return test(compareValues(v, want))
	}, nil
}
