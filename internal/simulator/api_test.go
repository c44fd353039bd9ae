package simulator_test

import (
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/ccaas/presence-bridge/internal/simulator"
)

var guidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// dataverseError decodes a Dataverse error body, failing the test when the
// body is not one.
func dataverseError(t *testing.T, body []byte) (code, message string) {
	t.Helper()
	var e struct {
		Error *struct {
			Code    *string `json:"code"`
			Message *string `json:"message"`
		} `json:"error"`
	}
	if err := json.Unmarshal(body, &e); err != nil || e.Error == nil || e.Error.Code == nil || e.Error.Message == nil {
		t.Fatalf("body %q is not a Dataverse error (err %v)", body, err)
	}
	return *e.Error.Code, *e.Error.Message
}

func TestPresenceStatuses(t *testing.T) {
	e := newEnv(t, nil)
	agent := e.sim.AgentIDs()[0]
	tok := simulator.DefaultToken
	tests := []struct {
		name       string
		method     string
		path       string
		caller     string
		header     http.Header // replaces caller/token when set
		token      string
		wantStatus int
		wantReason string
	}{
		{name: "ok", caller: agent, token: tok, wantStatus: 200},
		{name: "caller upper-case", caller: strings.ToUpper(agent), token: tok, wantStatus: 200},
		{name: "function call syntax", path: "/api/data/v9.2/CCaaS_GetPresence()", caller: agent, token: tok, wantStatus: 200},
		{name: "issued token", caller: agent, token: e.sim.IssueToken(), wantStatus: 200},
		{name: "no caller", token: tok, wantStatus: 400, wantReason: "bad-caller"},
		{name: "caller not a GUID", caller: "agent-7", token: tok, wantStatus: 400, wantReason: "bad-caller"},
		{name: "caller in braces", caller: "{" + agent + "}", token: tok, wantStatus: 400, wantReason: "bad-caller"},
		{name: "caller without hyphens", caller: strings.ReplaceAll(agent, "-", ""), token: tok, wantStatus: 400, wantReason: "bad-caller"},
		{name: "two callers", header: http.Header{"Mscrmcallerid": {agent, agent}, "Authorization": {"Bearer " + tok}}, wantStatus: 400, wantReason: "bad-caller"},
		{name: "unknown agent", caller: "394382b6-a4d4-ee11-904c-00224808a166", token: tok, wantStatus: 404, wantReason: "unknown-agent"},
		{name: "no token", caller: agent, wantStatus: 401, wantReason: "no-token"},
		{name: "wrong token", caller: agent, token: "nope", wantStatus: 401, wantReason: "token-refused"},
		{name: "basic auth", header: http.Header{"Mscrmcallerid": {agent}, "Authorization": {"Basic " + tok}}, wantStatus: 401, wantReason: "no-token"},
		{name: "empty bearer", header: http.Header{"Mscrmcallerid": {agent}, "Authorization": {"Bearer "}}, wantStatus: 401, wantReason: "no-token"},
		{name: "POST", method: http.MethodPost, caller: agent, token: tok, wantStatus: 405, wantReason: "method"},
		{name: "PUT", method: http.MethodPut, caller: agent, token: tok, wantStatus: 405, wantReason: "method"},
		{name: "DELETE", method: http.MethodDelete, caller: agent, token: tok, wantStatus: 405, wantReason: "method"},
		{name: "PATCH without token", method: http.MethodPatch, caller: agent, wantStatus: 405, wantReason: "method"},
		{name: "HEAD", method: http.MethodHead, caller: agent, token: tok, wantStatus: 405, wantReason: "method"},
		{name: "unknown path", path: "/api/data/v9.2/CCaaS_GetPresences", caller: agent, token: tok, wantStatus: 404, wantReason: "not-found"},
		{name: "wrong version", path: "/api/data/v9.1/CCaaS_GetPresence", caller: agent, token: tok, wantStatus: 404, wantReason: "not-found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			method, path := tt.method, tt.path
			if method == "" {
				method = http.MethodGet
			}
			if path == "" {
				path = "/api/data/v9.2/CCaaS_GetPresence"
			}
			req, err := http.NewRequest(method, e.srv.URL+path, nil)
			if err != nil {
				t.Fatal(err)
			}
			if tt.header != nil {
				req.Header = tt.header
			} else {
				if tt.caller != "" {
					req.Header.Set("MSCRMCallerID", tt.caller)
				}
				if tt.token != "" {
					req.Header.Set("Authorization", "Bearer "+tt.token)
				}
			}
			before := e.sim.Stats().ByReason[tt.wantReason]
			resp, err := e.srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("status %d, want %d; body %s", resp.StatusCode, tt.wantStatus, body)
			}
			if tt.wantReason != "" {
				if after := e.sim.Stats().ByReason[tt.wantReason]; after != before+1 {
					t.Errorf("reason %q counted %d -> %d, want one more", tt.wantReason, before, after)
				}
			}
			switch {
			case tt.wantStatus == 200:
				if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
					t.Errorf("Content-Type %q", ct)
				}
			case method == http.MethodHead:
			default:
				dataverseError(t, body)
			}
			if tt.wantStatus == 405 && resp.Header.Get("Allow") != "GET" {
				t.Errorf("Allow %q, want GET", resp.Header.Get("Allow"))
			}
			if tt.wantStatus == 401 && resp.Header.Get("WWW-Authenticate") == "" {
				t.Error("401 without WWW-Authenticate")
			}
		})
	}
}

func TestPresenceBodyShape(t *testing.T) {
	e := newEnv(t, func(o *simulator.Options) { o.Agents = 20 })
	for _, st := range e.sim.Agents() {
		resp, body := e.get(t, st.AgentID, simulator.DefaultToken)
		if resp.StatusCode != 200 {
			t.Fatalf("status %d: %s", resp.StatusCode, body)
		}
		var m map[string]any
		if err := json.Unmarshal(body, &m); err != nil {
			t.Fatalf("decode %s: %v", body, err)
		}
		var keys []string
		for k := range m {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		want := []string{"@odata.context", "ActiveBrowserSessions", "AgentId", "AgentName", "AllowedChannels", "CurrentPresenceStatusInfo", "DisabledChannels", "PresenceId", "Timestamp"}
		if !slices.Equal(keys, want) {
			t.Fatalf("keys %v, want %v", keys, want)
		}
		if ctx, _ := m["@odata.context"].(string); !strings.HasPrefix(ctx, e.srv.URL+"/api/data/v9.2/$metadata#") {
			t.Errorf("@odata.context %q", ctx)
		}
		for _, k := range []string{"ActiveBrowserSessions", "Timestamp"} {
			n, ok := m[k].(float64)
			if !ok || n != float64(int64(n)) || n < 0 {
				t.Errorf("%s = %#v, want a non-negative integer", k, m[k])
			}
		}
		for _, k := range []string{"AgentId", "PresenceId"} {
			if s, _ := m[k].(string); !guidRE.MatchString(s) {
				t.Errorf("%s = %#v, want a lower-case GUID", k, m[k])
			}
		}
		for _, k := range []string{"AgentName", "CurrentPresenceStatusInfo"} {
			if s, _ := m[k].(string); s == "" {
				t.Errorf("%s = %#v, want a non-empty string", k, m[k])
			}
		}
		for _, k := range []string{"AllowedChannels", "DisabledChannels"} {
			list, ok := m[k].([]any)
			if !ok {
				t.Errorf("%s = %#v, want an array", k, m[k])
			}
			for _, v := range list {
				if _, ok := v.(string); !ok {
					t.Errorf("%s holds %#v, want strings", k, v)
				}
			}
		}
		// The body is the agent's state.
		var b presenceBody
		_ = json.Unmarshal(body, &b)
		if b.AgentId != st.AgentID || b.AgentName != st.AgentName || b.ActiveBrowserSessions != st.ActiveBrowserSessions ||
			b.Timestamp != st.Timestamp || b.PresenceId != st.PresenceID || b.CurrentPresenceStatusInfo != st.PresenceName ||
			!slices.Equal(b.AllowedChannels, st.AllowedChannels) || !slices.Equal(b.DisabledChannels, st.DisabledChannels) {
			t.Errorf("body %+v does not match state %+v", b, st)
		}
	}
}

func TestPresenceCatalogue(t *testing.T) {
	const selectPath = "/api/data/v9.2/msdyn_presences?$select=msdyn_presenceid,msdyn_name,msdyn_basepresencestatus"
	type row = map[string]any
	tests := []struct {
		name       string
		mutate     func(*simulator.Options)
		method     string
		path       string
		caller     string
		token      string
		wantStatus int
		wantKeys   []string // of every row, sorted
	}{
		{name: "select", path: selectPath, token: simulator.DefaultToken, wantStatus: 200,
			wantKeys: []string{"@odata.etag", "msdyn_basepresencestatus", "msdyn_name", "msdyn_presenceid"}},
		{name: "select without the key", path: "/api/data/v9.2/msdyn_presences?$select=msdyn_name", token: simulator.DefaultToken, wantStatus: 200,
			wantKeys: []string{"@odata.etag", "msdyn_name", "msdyn_presenceid"}},
		{name: "every column", path: "/api/data/v9.2/msdyn_presences", token: simulator.DefaultToken, wantStatus: 200,
			wantKeys: []string{"@odata.etag", "msdyn_basepresencestatus", "msdyn_name", "msdyn_presenceid", "msdyn_presencestatustext", "statecode", "statuscode"}},
		{name: "with caller", path: selectPath, caller: "394382b6-a4d4-ee11-904c-00224808a166", token: simulator.DefaultToken, wantStatus: 200,
			wantKeys: []string{"@odata.etag", "msdyn_basepresencestatus", "msdyn_name", "msdyn_presenceid"}},
		{name: "bad caller", path: selectPath, caller: "x", token: simulator.DefaultToken, wantStatus: 400},
		{name: "unknown column", path: "/api/data/v9.2/msdyn_presences?$select=msdyn_colour", token: simulator.DefaultToken, wantStatus: 400},
		{name: "no token", path: selectPath, wantStatus: 401},
		{name: "POST", method: http.MethodPost, path: selectPath, token: simulator.DefaultToken, wantStatus: 405},
		{name: "read not granted", mutate: func(o *simulator.Options) { o.Faults.PresencesStatus = 403 }, path: selectPath, token: simulator.DefaultToken, wantStatus: 403},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, tt.mutate)
			method := tt.method
			if method == "" {
				method = http.MethodGet
			}
			resp, body := e.do(t, t.Context(), method, tt.path, tt.caller, tt.token)
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tt.wantStatus, body)
			}
			if tt.wantStatus != 200 {
				dataverseError(t, body)
				return
			}
			var coll struct {
				Context string `json:"@odata.context"`
				Value   []row  `json:"value"`
			}
			if err := json.Unmarshal(body, &coll); err != nil {
				t.Fatalf("decode %s: %v", body, err)
			}
			if !strings.Contains(coll.Context, "$metadata#msdyn_presences") {
				t.Errorf("@odata.context %q", coll.Context)
			}
			byID := map[string]row{}
			for _, r := range coll.Value {
				var keys []string
				for k := range r {
					keys = append(keys, k)
				}
				slices.Sort(keys)
				if !slices.Equal(keys, tt.wantKeys) {
					t.Fatalf("row keys %v, want %v", keys, tt.wantKeys)
				}
				byID[r["msdyn_presenceid"].(string)] = r
			}
			want := append(simulator.OutOfBoxPresences(), simulator.DefaultCustomPresences()...)
			if len(coll.Value) != len(want) {
				t.Fatalf("%d presences, want %d", len(coll.Value), len(want))
			}
			for _, p := range want {
				r, ok := byID[p.ID]
				if !ok {
					t.Fatalf("presence %s (%s) missing", p.ID, p.Name)
				}
				if n, ok := r["msdyn_name"]; ok && n != p.Name {
					t.Errorf("%s: name %v, want %s", p.ID, n, p.Name)
				}
				if b, ok := r["msdyn_basepresencestatus"]; ok && b != float64(p.BaseStatus) {
					t.Errorf("%s: base status %v, want %d", p.ID, b, p.BaseStatus)
				}
			}
		})
	}
}

func TestOutOfBoxPresences(t *testing.T) {
	want := map[string]struct {
		name string
		base int
	}{
		"f523f628-c07a-e811-8162-000d3aa11f50": {"Available", 192360000},
		"efdeb843-c07a-e811-8162-000d3aa11f50": {"Busy", 192360001},
		"08971864-c07a-e811-8162-000d3aa11f50": {"Busy - DND", 192360002},
		"3dacae76-c07a-e811-8162-000d3aa11f50": {"Away", 192360003},
		"70139190-c07a-e811-8162-000d3aa11f50": {"Offline", 192360004},
	}
	got := simulator.OutOfBoxPresences()
	if len(got) != len(want) {
		t.Fatalf("%d out-of-box presences, want %d", len(got), len(want))
	}
	for _, p := range got {
		w, ok := want[p.ID]
		if !ok || w.name != p.Name || w.base != p.BaseStatus || simulator.BaseStatusName(p.BaseStatus) != p.Name {
			t.Errorf("presence %+v, want %+v", p, w)
		}
	}
	for _, p := range simulator.DefaultCustomPresences() {
		if simulator.BaseStatusName(p.BaseStatus) == "" || !guidRE.MatchString(p.ID) {
			t.Errorf("custom presence %+v is not valid", p)
		}
	}
}
