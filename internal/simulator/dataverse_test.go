package simulator_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ccaas/presence-bridge/internal/simulator"
	"github.com/ccaas/presence-bridge/internal/testwait"
)

const functionPath = "/api/data/v9.2/CCaaS_GetPresence(ApiVersion=@v)?@v=%271.0%27"

func TestCallForms(t *testing.T) {
	const bare, empty = "/api/data/v9.2/CCaaS_GetPresence", "/api/data/v9.2/CCaaS_GetPresence()"
	tests := []struct {
		mode string
		path string
		want int
		code string
	}{
		{simulator.CallFormBare, bare, 200, ""},
		{simulator.CallFormBare, empty, 200, ""},
		{simulator.CallFormBare, functionPath, 404, "0x8006088a"},
		{"", functionPath, 404, "0x8006088a"},
		{simulator.CallFormFunction, functionPath, 200, ""},
		{simulator.CallFormFunction, "/api/data/v9.2/CCaaS_GetPresence(ApiVersion='1.0')", 200, ""},
		{simulator.CallFormFunction, bare, 400, "0x80060888"},
		{simulator.CallFormFunction, empty, 404, "0x8006088a"},
		{simulator.CallFormFunction, "/api/data/v9.2/CCaaS_GetPresence(ApiVersion=@v)", 400, "0x80060888"},
		{simulator.CallFormFunction, "/api/data/v9.2/CCaaS_GetPresence(ApiVersion=@v)?@v=%272.0%27", 400, "0x80040203"},
		{simulator.CallFormFunction, "/api/data/v9.2/CCaaS_GetPresence(Version=@v)?@v=%271.0%27", 404, "0x8006088a"},
		{simulator.CallFormBoth, bare, 200, ""},
		{simulator.CallFormBoth, functionPath, 200, ""},
	}
	for _, tt := range tests {
		t.Run(tt.mode+" "+tt.path, func(t *testing.T) {
			e := newEnv(t, func(o *simulator.Options) { o.CallForm = tt.mode })
			resp, body := e.do(t, context.Background(), http.MethodGet, tt.path, e.sim.AgentIDs()[0], simulator.DefaultToken)
			if resp.StatusCode != tt.want {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tt.want, body)
			}
			if tt.code != "" {
				if code, msg := dataverseError(t, body); code != tt.code {
					t.Errorf("code %s (%q), want %s", code, msg, tt.code)
				}
			}
		})
	}
	if _, err := simulator.New(simulator.Options{CallForm: "maybe"}); err == nil {
		t.Error("New accepted call form maybe")
	}
}

func TestCustomAPIs(t *testing.T) {
	const q = "/api/data/v9.2/customapis?$select=uniquename,isfunction&$filter=uniquename%20eq%20%27CCaaS_GetPresence%27&$expand=CustomAPIRequestParameters($select=uniquename,name,isoptional)"
	type row struct {
		UniqueName string `json:"uniquename"`
		Params     []struct {
			UniqueName string `json:"uniquename"`
			IsOptional bool   `json:"isoptional"`
		} `json:"CustomAPIRequestParameters"`
	}
	for _, tt := range []struct {
		mode       string
		wantParams int
		optional   bool
	}{{simulator.CallFormBare, 0, false}, {simulator.CallFormFunction, 1, false}, {simulator.CallFormBoth, 1, true}} {
		e := newEnv(t, func(o *simulator.Options) { o.CallForm = tt.mode })
		resp, body := e.do(t, context.Background(), http.MethodGet, q, "", simulator.DefaultToken)
		var out struct{ Value []row }
		if err := json.Unmarshal(body, &out); err != nil || resp.StatusCode != 200 || len(out.Value) != 1 {
			t.Fatalf("%s: status %d, %v: %s", tt.mode, resp.StatusCode, err, body)
		}
		if p := out.Value[0].Params; len(p) != tt.wantParams || (len(p) == 1 && (p[0].UniqueName != "ApiVersion" || p[0].IsOptional != tt.optional)) {
			t.Errorf("%s: parameters %+v", tt.mode, p)
		}
	}
	e := newEnv(t, func(o *simulator.Options) { o.CustomAPIsStatus = 403 })
	resp, body := e.do(t, context.Background(), http.MethodGet, q, "", simulator.DefaultToken)
	if code, _ := dataverseError(t, body); resp.StatusCode != 403 || code != "0x80040220" {
		t.Errorf("customapis not readable: %d %s", resp.StatusCode, body)
	}
}

func TestPayloadVariants(t *testing.T) {
	e := newEnv(t, func(o *simulator.Options) { o.NullEmpty, o.ExtraKeys, o.Gzip, o.Inactive = true, true, true, true })
	id := e.sim.AgentIDs()[0]
	if _, _, err := e.sim.Logout(id); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.sim.SetChannels(id, nil, nil); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodGet, e.srv.URL+"/api/data/v9.2/CCaaS_GetPresence", nil)
	req.Header.Set("MSCRMCallerID", id)
	req.Header.Set("Authorization", "Bearer "+simulator.DefaultToken)
	req.Header.Set("Accept-Encoding", "gzip")
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.Header.Get("Content-Encoding") != "gzip" {
		t.Fatalf("Content-Encoding %q, want gzip", resp.Header.Get("Content-Encoding"))
	}
	zr, err := gzip.NewReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	plain, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(plain, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"AllowedChannels", "DisabledChannels", "Timestamp"} {
		if v, ok := m[k]; !ok || v != nil {
			t.Errorf("%s = %v, want null", k, v)
		}
	}
	if _, ok := m["msdyn_capacity"]; !ok {
		t.Errorf("no extra key in %s", plain)
	}
	// Inactive is in the catalogue and can be set, never drawn at random.
	if _, _, err := e.sim.SetPresence(id, simulator.PresenceInactive); err != nil {
		t.Fatal(err)
	}
	if st, _ := e.sim.State(id); st.PresenceName != "Inactive" || st.BaseStatus != simulator.BaseInactive {
		t.Errorf("state %+v", st)
	}
	for range 50 {
		for _, c := range e.sim.Step() {
			if c.Kind == simulator.KindPresence && c.State.PresenceID == simulator.PresenceInactive {
				t.Fatalf("random change to Inactive: %+v", c)
			}
		}
	}
}

func TestQuotaKindsAndScope(t *testing.T) {
	t.Run("caller scope charges every agent to the application user", func(t *testing.T) {
		e := newEnv(t, func(o *simulator.Options) {
			o.Quota = simulator.Quota{Requests: 3, Window: 10 * time.Second, Scope: simulator.QuotaScopeCaller}
		})
		ids := e.sim.AgentIDs()
		var last string
		for i := range 3 {
			resp, _ := e.get(t, ids[i], simulator.DefaultToken)
			if resp.StatusCode != 200 {
				t.Fatalf("request %d: %d", i, resp.StatusCode)
			}
			if got := resp.Header.Get("x-ms-ratelimit-burst-remaining-xrm-requests"); got == last {
				t.Errorf("remaining %q did not go down across agents", got)
			} else {
				last = got
			}
		}
		resp, body := e.get(t, ids[3], simulator.DefaultToken)
		if code, _ := dataverseError(t, body); resp.StatusCode != 429 || code != "0x80072322" {
			t.Errorf("fourth agent: %d %s", resp.StatusCode, body)
		}
		if st := e.sim.Stats(); st.QuotaViolationsByUser[""] != 1 {
			t.Errorf("violations by user %v, want one for the application user", st.QuotaViolationsByUser)
		}
	})
	t.Run("agent scope headers are per agent", func(t *testing.T) {
		e := newEnv(t, nil)
		ids := e.sim.AgentIDs()
		r1, _ := e.get(t, ids[0], simulator.DefaultToken)
		r2, _ := e.get(t, ids[1], simulator.DefaultToken)
		h := "x-ms-ratelimit-burst-remaining-xrm-requests"
		if r1.Header.Get(h) != "5999" || r2.Header.Get(h) != "5999" {
			t.Errorf("remaining %q and %q, want 5999 each", r1.Header.Get(h), r2.Header.Get(h))
		}
		if r1.Header.Get("x-ms-ratelimit-time-remaining-xrm-requests") == "" {
			t.Error("no time-remaining header")
		}
	})
	t.Run("execution time", func(t *testing.T) {
		e := newEnv(t, func(o *simulator.Options) {
			o.Quota = simulator.Quota{Window: 10 * time.Second, ExecutionTime: 2 * time.Second}
			o.Faults.Latency = 50 * time.Millisecond // real time; the fake clock moves below
		})
		id := e.sim.AgentIDs()[0]
		// The fake clock moves only when told: advance it while the
		// request is held in flight by its latency, so it takes 2.5 s of
		// the simulator's time.
		e.clock.Advance(time.Second)
		done := make(chan struct{})
		go func() {
			defer close(done)
			e.get(t, id, simulator.DefaultToken)
		}()
		testwait.Until(t, 5*time.Second, "request in flight", func() bool { return e.sim.Stats().PeakConcurrent == 1 })
		e.clock.Advance(2500 * time.Millisecond)
		<-done
		resp, body := e.get(t, id, simulator.DefaultToken)
		if code, msg := dataverseError(t, body); resp.StatusCode != 429 || code != "0x80072321" || !strings.Contains(msg, "2000 milliseconds") {
			t.Errorf("after 2.5 s of execution: %d %s", resp.StatusCode, body)
		}
	})
	t.Run("forced codes", func(t *testing.T) {
		e := newEnv(t, nil)
		id := e.sim.AgentIDs()[0]
		for _, code := range []string{"0x80072321", "0x80072326", "0x80072322"} {
			if err := e.sim.SetAgentFault(id, simulator.AgentFault{Status: 429, Code: code, Count: 1}); err != nil {
				t.Fatal(err)
			}
			resp, body := e.get(t, id, simulator.DefaultToken)
			if got, _ := dataverseError(t, body); resp.StatusCode != 429 || got != code {
				t.Errorf("forced %s: %d %s", code, resp.StatusCode, body)
			}
		}
		if err := e.sim.SetAgentFault(id, simulator.AgentFault{Status: 429, RetryAfterRaw: "Fri, 31 Dec 9999 23:59:59 GMT", Count: 1}); err != nil {
			t.Fatal(err)
		}
		if resp, _ := e.get(t, id, simulator.DefaultToken); resp.Header.Get("Retry-After") != "Fri, 31 Dec 9999 23:59:59 GMT" {
			t.Errorf("Retry-After %q", resp.Header.Get("Retry-After"))
		}
	})
}
