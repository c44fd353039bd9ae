package simulator_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/ccaas/presence-bridge/internal/simulator"
)

type historyPage struct {
	Value []struct {
		ID       string  `json:"msdyn_agentstatushistoryid"`
		Agent    string  `json:"_msdyn_agentid_value"`
		Presence string  `json:"_msdyn_presenceid_value"`
		Start    string  `json:"msdyn_starttime"`
		Created  string  `json:"createdon"`
		End      *string `json:"msdyn_endtime"`
	} `json:"value"`
	NextLink string `json:"@odata.nextLink"`
}

// readHistory follows every page of a history query.
func readHistory(t *testing.T, e *env, query string, pageSize int) (rows []string, pages int) {
	t.Helper()
	next := e.srv.URL + "/api/data/v9.2/msdyn_agentstatushistories?" + query
	for next != "" {
		req, _ := http.NewRequest(http.MethodGet, next, nil)
		req.Header.Set("Authorization", "Bearer "+simulator.DefaultToken)
		req.Header.Set("Prefer", "odata.maxpagesize="+itoa(pageSize))
		resp, err := e.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var p historyPage
		err = json.NewDecoder(resp.Body).Decode(&p)
		resp.Body.Close()
		if resp.StatusCode != 200 || err != nil {
			t.Fatalf("status %d, decode %v", resp.StatusCode, err)
		}
		pages++
		for _, r := range p.Value {
			rows = append(rows, r.Agent+" "+r.Presence+" "+r.Start)
		}
		next = p.NextLink
	}
	return rows, pages
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

// TestFeedTablesFollowTheGroundTruth checks that the history table holds one
// row per presence change of the ground truth, written FeedLag after it, and
// that $filter, $orderby, $select and paging behave as Dataverse's.
func TestFeedTablesFollowTheGroundTruth(t *testing.T) {
	e := newEnv(t, func(o *simulator.Options) { o.FeedLag = 2 * time.Second })
	agents := e.sim.AgentIDs()
	e.clock.Advance(3 * time.Second)
	if _, _, err := e.sim.SetPresence(agents[0], simulator.PresenceAway); err != nil {
		t.Fatal(err)
	}
	q := url.Values{"$select": {"msdyn_agentstatushistoryid,_msdyn_agentid_value,_msdyn_presenceid_value,msdyn_starttime,createdon"},
		"$orderby": {"createdon asc,msdyn_agentstatushistoryid asc"}}.Encode()
	rows, pages := readHistory(t, e, q, 2)
	if len(rows) != len(agents) || pages != 3 {
		t.Fatalf("before the lag: %d rows in %d pages, want the %d initial rows in 3 pages", len(rows), pages, len(agents))
	}
	e.clock.Advance(2 * time.Second)
	rows, _ = readHistory(t, e, q, 100)
	var truth []string
	for _, c := range e.sim.Changes() {
		if c.Fields.Has(simulator.FieldPresence) {
			truth = append(truth, c.AgentID+" "+c.State.PresenceID+" "+c.At.UTC().Format("2006-01-02T15:04:05Z"))
		}
	}
	if strings.Join(rows, "\n") != strings.Join(truth, "\n") {
		t.Fatalf("rows:\n%s\nground truth:\n%s", strings.Join(rows, "\n"), strings.Join(truth, "\n"))
	}
	since := e.clock.Now().Add(-time.Second).UTC().Format(time.RFC3339)
	f := url.Values{"$filter": {"createdon ge " + since + " and (_msdyn_agentid_value eq " + agents[0] + " or _msdyn_agentid_value eq " + agents[1] + ")"}}.Encode()
	rows, _ = readHistory(t, e, f, 100)
	if len(rows) != 1 || !strings.Contains(rows[0], simulator.PresenceAway) {
		t.Fatalf("filtered rows %v, want the one change to Away", rows)
	}
	// A top-level or: the createdon bound does not hold for every row.
	f = url.Values{"$filter": {"createdon ge " + since + " or _msdyn_agentid_value eq " + agents[1]}}.Encode()
	if rows, _ = readHistory(t, e, f, 100); len(rows) != 2 {
		t.Fatalf("rows %v, want the change to Away and agent 1's first row", rows)
	}
	if rows, _ = readHistory(t, e, "$top=2", 1); len(rows) != 2 {
		t.Fatalf("$top=2 gave %d rows", len(rows))
	}
}

// TestFeedTablesRefuse checks the faults and the query errors.
func TestFeedTablesRefuse(t *testing.T) {
	tests := []struct {
		name   string
		status int
		path   string
		want   int
	}{
		{name: "read not granted", status: 403, path: "msdyn_agentstatushistories", want: 403},
		{name: "table missing", status: 404, path: "msdyn_agentstatuses", want: 404},
		{name: "throttled", status: 429, path: "msdyn_agentstatushistories", want: 429},
		{name: "server error", status: 500, path: "msdyn_agentstatuses", want: 500},
		{name: "unknown column", path: "msdyn_agentstatushistories?$select=msdyn_nosuch", want: 400},
		{name: "bad filter", path: "msdyn_agentstatushistories?$filter=" + url.QueryEscape("createdon ge yesterday"), want: 400},
		{name: "served", path: "msdyn_agentstatuses?$select=_msdyn_currentpresenceid_value", want: 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, nil)
			if err := e.sim.SetFaults(simulator.Faults{FeedStatus: tt.status}); err != nil {
				t.Fatal(err)
			}
			resp, body := e.do(t, t.Context(), http.MethodGet, "/api/data/v9.2/"+tt.path, "", simulator.DefaultToken)
			if resp.StatusCode != tt.want {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tt.want, body)
			}
			if tt.want == 429 && resp.Header.Get("Retry-After") == "" {
				t.Error("429 without Retry-After")
			}
		})
	}
}
