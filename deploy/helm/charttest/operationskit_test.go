package charttest

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/grafana/grafana-foundation-sdk/go/cog/plugins"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/prometheus"
	"sigs.k8s.io/yaml"
)

const (
	alertsFile   = "../ccaas-presence-bridge/files/alerts.yaml"
	runbooksFile = "../../../docs/runbooks.md"
)

// ruleFile is a Prometheus rule file, as promtool reads it.
type ruleFile struct {
	Groups []struct {
		Name  string `json:"name"`
		Rules []rule `json:"rules"`
	} `json:"groups"`
}

type rule struct {
	Alert       string            `json:"alert"`
	Expr        string            `json:"expr"`
	For         string            `json:"for"`
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
}

func readAlerts(t *testing.T) []rule {
	t.Helper()
	b, err := os.ReadFile(alertsFile)
	if err != nil {
		t.Fatalf("read the alert rules: %v", err)
	}
	var f ruleFile
	if err := yaml.UnmarshalStrict(b, &f); err != nil {
		t.Fatalf("parse %s: %v", alertsFile, err)
	}
	var rules []rule
	for _, g := range f.Groups {
		rules = append(rules, g.Rules...)
	}
	return rules
}

// The alerts the operations kit promises, each with a runbook.
var wantAlerts = []string{
	"CCaaSBridgeNoSuccessfulPoll", // no successful poll
	"CCaaSBridgeAgentsStale",      // agents stale
	"CCaaSBridgeRateLimited",      // a rising 429 rate
	"CCaaSBridgeTokenFailures",    // token failures
	"CCaaSBridgePublishBacklog",   // publish backlog growing
	"CCaaSBridgeNoLeader",         // no replica leading
	"CCaaSBridgeNotReady",         // readiness lost
}

// githubAnchor is the anchor GitHub gives a Markdown heading.
func githubAnchor(heading string) string {
	h := strings.ToLower(strings.TrimSpace(heading))
	h = regexp.MustCompile(`[^a-z0-9 _-]`).ReplaceAllString(h, "")
	return strings.ReplaceAll(h, " ", "-")
}

func TestEveryAlertHasARunbookSection(t *testing.T) {
	rules := readAlerts(t)
	var names []string
	for _, r := range rules {
		names = append(names, r.Alert)
	}
	if !slices.Equal(names, wantAlerts) {
		t.Fatalf("alerts = %v, want %v", names, wantAlerts)
	}
	md, err := os.ReadFile(runbooksFile)
	if err != nil {
		t.Fatalf("read the runbooks: %v", err)
	}
	sections := map[string]string{} // anchor -> body
	parts := regexp.MustCompile(`(?m)^## (.+)$`).FindAllStringSubmatchIndex(string(md), -1)
	for i, p := range parts {
		end := len(md)
		if i+1 < len(parts) {
			end = parts[i+1][0]
		}
		sections[githubAnchor(string(md[p[2]:p[3]]))] = string(md[p[1]:end])
	}
	values := readValuesMap(t, filepath.Join(chartDir, "values.yaml"))
	base := values["metrics"].(map[string]any)["prometheusRule"].(map[string]any)["runbookUrl"].(string)
	for _, r := range rules {
		t.Run(r.Alert, func(t *testing.T) {
			want := base + "#" + githubAnchor(r.Alert)
			if got := r.Annotations["runbook_url"]; got != want {
				t.Errorf("runbook_url = %q, want %q (values.yaml's metrics.prometheusRule.runbookUrl and the alert's anchor)", got, want)
			}
			body, ok := sections[githubAnchor(r.Alert)]
			if !ok {
				t.Fatalf("docs/runbooks.md has no section '## %s'", r.Alert)
			}
			for _, part := range []string{"Meaning", "Impact", "Diagnosis", "Mitigation"} {
				if !strings.Contains(body, part) {
					t.Errorf("runbook of %s says nothing under %q", r.Alert, part)
				}
			}
			if r.Labels["severity"] == "" || r.Annotations["summary"] == "" || r.Annotations["description"] == "" || r.For == "" {
				t.Errorf("%s: severity, summary, description and for are all required: %+v", r.Alert, r)
			}
		})
	}
}

func readValuesMap(t *testing.T, file string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("read %s: %v", file, err)
	}
	var v map[string]any
	if err := yaml.Unmarshal(b, &v); err != nil {
		t.Fatalf("parse %s: %v", file, err)
	}
	return v
}

func TestOperationsKitIsOffByDefault(t *testing.T) {
	r := render(t, "-f", filepath.Join(chartDir, "ci", "minimal-values.yaml"))
	if len(r.prometheusRules) != 0 {
		t.Errorf("rendered %d PrometheusRules with the defaults, want none", len(r.prometheusRules))
	}
	for name, cm := range r.configMaps {
		if _, ok := cm.Labels["grafana_dashboard"]; ok {
			t.Errorf("ConfigMap %s carries the dashboard label with the defaults", name)
		}
	}
}

func TestPrometheusRuleRendersTheAlertsFile(t *testing.T) {
	want := readAlerts(t)
	minimal := filepath.Join(chartDir, "ci", "minimal-values.yaml")
	tests := []struct {
		name       string
		args       []string
		ruleLabels map[string]string
		alertLabel map[string]string
		runbook    string
	}{
		{
			name:    "defaults",
			args:    []string{"--set", "metrics.prometheusRule.enabled=true"},
			runbook: "https://github.com/ccaas/presence-bridge/blob/main/docs/runbooks.md",
		},
		{
			name: "labels and runbook elsewhere",
			args: []string{"--set", "metrics.prometheusRule.enabled=true",
				"--set", "metrics.prometheusRule.labels.release=kube-prometheus-stack",
				"--set", "metrics.prometheusRule.additionalAlertLabels.team=contact-center",
				"--set", "metrics.prometheusRule.runbookUrl=https://wiki.example.com/ccaas/runbooks"},
			ruleLabels: map[string]string{"release": "kube-prometheus-stack"},
			alertLabel: map[string]string{"team": "contact-center"},
			runbook:    "https://wiki.example.com/ccaas/runbooks",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := render(t, append([]string{"-f", minimal}, tt.args...)...)
			if len(r.prometheusRules) != 1 {
				t.Fatalf("rendered %d PrometheusRules, want 1", len(r.prometheusRules))
			}
			pr := r.prometheusRules[0]
			if pr.Namespace != namespace {
				t.Errorf("namespace %q, want %q", pr.Namespace, namespace)
			}
			for k, v := range tt.ruleLabels {
				if pr.Labels[k] != v {
					t.Errorf("PrometheusRule label %s = %q, want %q", k, pr.Labels[k], v)
				}
			}
			var got []rule
			for _, g := range pr.Spec.Groups {
				for _, r := range g.Rules {
					f := ""
					if r.For != nil {
						f = string(*r.For)
					}
					got = append(got, rule{Alert: r.Alert, Expr: r.Expr.String(), For: f, Labels: r.Labels, Annotations: r.Annotations})
				}
			}
			if len(got) != len(want) {
				t.Fatalf("rendered %d alerts, the file has %d", len(got), len(want))
			}
			for i, w := range want {
				g := got[i]
				if g.Alert != w.Alert || g.Expr != w.Expr || g.For != w.For {
					t.Errorf("alert %d rendered as %s for %s: %q, want %s for %s: %q", i, g.Alert, g.For, g.Expr, w.Alert, w.For, w.Expr)
				}
				for k, v := range w.Labels {
					if g.Labels[k] != v {
						t.Errorf("%s: label %s = %q, want %q", w.Alert, k, g.Labels[k], v)
					}
				}
				for k, v := range tt.alertLabel {
					if g.Labels[k] != v {
						t.Errorf("%s: additional label %s = %q, want %q", w.Alert, k, g.Labels[k], v)
					}
				}
				if wantURL := tt.runbook + "#" + githubAnchor(w.Alert); g.Annotations["runbook_url"] != wantURL {
					t.Errorf("%s: runbook_url %q, want %q", w.Alert, g.Annotations["runbook_url"], wantURL)
				}
				if g.Annotations["description"] != w.Annotations["description"] || g.Annotations["summary"] != w.Annotations["summary"] {
					t.Errorf("%s: annotations %v, want those of the file %v", w.Alert, g.Annotations, w.Annotations)
				}
			}
		})
	}
}

func TestDashboardConfigMapForTheGrafanaSidecar(t *testing.T) {
	file, err := os.ReadFile(DashboardFile)
	if err != nil {
		t.Fatalf("read the dashboard: %v", err)
	}
	minimal := filepath.Join(chartDir, "ci", "minimal-values.yaml")
	tests := []struct {
		name      string
		args      []string
		namespace string
		labels    map[string]string
	}{
		{"defaults", []string{"--set", "metrics.grafanaDashboard.enabled=true"}, namespace, map[string]string{"grafana_dashboard": "1"}},
		{"grafana's namespace and folder", []string{"--set", "metrics.grafanaDashboard.enabled=true",
			"--set", "metrics.grafanaDashboard.namespace=monitoring",
			"--set", "metrics.grafanaDashboard.labels.team=contact-center",
			"--set", "metrics.grafanaDashboard.annotations.grafana_folder=CCaaS"},
			"monitoring", map[string]string{"grafana_dashboard": "1", "team": "contact-center"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := render(t, append([]string{"-f", minimal}, tt.args...)...)
			var found int
			for _, cm := range r.configMaps {
				if _, ok := cm.Labels["grafana_dashboard"]; !ok {
					continue
				}
				found++
				if cm.Namespace != tt.namespace {
					t.Errorf("dashboard ConfigMap in %q, want %q", cm.Namespace, tt.namespace)
				}
				for k, v := range tt.labels {
					if cm.Labels[k] != v {
						t.Errorf("dashboard ConfigMap label %s = %q, want %q", k, cm.Labels[k], v)
					}
				}
				if len(cm.Data) != 1 || cm.Data["ccaas-presence-bridge.json"] == "" {
					t.Fatalf("dashboard ConfigMap data keys %v, want one ccaas-presence-bridge.json", keys(cm.Data))
				}
				if got := cm.Data["ccaas-presence-bridge.json"]; got != strings.TrimRight(string(file), "\n") {
					t.Errorf("the ConfigMap's dashboard differs from %s", DashboardFile)
				}
			}
			if found != 1 {
				t.Fatalf("rendered %d ConfigMaps with the grafana_dashboard label, want 1", found)
			}
		})
	}
}

func keys(m map[string]string) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

func TestDashboardIsGenerated(t *testing.T) {
	want, err := DashboardJSON()
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(DashboardFile)
	if err != nil {
		t.Fatalf("read the committed dashboard: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s differs from what the generator builds: run `go generate ./...` in deploy/helm/charttest and commit the result", DashboardFile)
	}
}

// The panels the operations kit promises, by title.
var wantPanels = []string{
	"Poll results by class",
	"Request rate per agent against the service-protection budget",
	"Agents by state",
	"Stale agents",
	"Publish latency",
	"Publish backlog",
	"Leadership",
	"Token refreshes",
}

func TestDashboardStructure(t *testing.T) {
	// Decode the committed file with the SDK's own types, as Grafana's
	// schema describes them.
	plugins.RegisterDefaultPlugins()
	b, err := os.ReadFile(DashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard.Dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("decode %s as a Grafana dashboard: %v", DashboardFile, err)
	}
	if d.Uid == nil || *d.Uid != DashboardUID || d.Title == nil || *d.Title == "" {
		t.Errorf("uid %v title %v, want uid %s and a title", d.Uid, d.Title, DashboardUID)
	}
	titles := panelTitles(d)
	for _, w := range wantPanels {
		if !slices.Contains(titles, w) {
			t.Errorf("no panel %q; panels: %q", w, titles)
		}
	}
	var vars []string
	for _, v := range d.Templating.List {
		vars = append(vars, v.Name)
	}
	if !slices.Equal(vars, []string{"datasource", "namespace", "job"}) {
		t.Errorf("variables %v, want datasource, namespace, job", vars)
	}

	ids := map[uint32]bool{}
	type cell struct{ x, y uint32 }
	taken := map[cell]string{}
	for _, p := range d.Panels {
		if p.RowPanel != nil {
			continue
		}
		pn := p.Panel
		title := *pn.Title
		if pn.Id == nil || ids[*pn.Id] {
			t.Errorf("panel %q: missing or repeated id", title)
		} else {
			ids[*pn.Id] = true
		}
		if pn.Datasource == nil || pn.Datasource.Uid == nil || *pn.Datasource.Uid != "${datasource}" {
			t.Errorf("panel %q does not use the datasource variable", title)
		}
		gp := pn.GridPos
		if gp == nil || gp.W == 0 || gp.H == 0 || gp.X+gp.W > 24 {
			t.Fatalf("panel %q: grid position %+v outside the 24-column grid", title, gp)
		}
		for x := gp.X; x < gp.X+gp.W; x++ {
			for y := gp.Y; y < gp.Y+gp.H; y++ {
				if other, ok := taken[cell{x, y}]; ok {
					t.Fatalf("panels %q and %q overlap", other, title)
				}
				taken[cell{x, y}] = title
			}
		}
		if len(pn.Targets) == 0 {
			t.Errorf("panel %q has no query", title)
		}
		for _, target := range pn.Targets {
			q, ok := target.(*prometheus.Dataquery)
			if !ok {
				t.Fatalf("panel %q: query of type %T, want a Prometheus query", title, target)
			}
			if q.RefId == nil || *q.RefId == "" {
				t.Errorf("panel %q: query %q without refId", title, q.Expr)
			}
			// Every bridge metric is selected by the dashboard's variables;
			// the budget line is a constant.
			if strings.Contains(q.Expr, "ccaas_bridge_") && strings.Count(q.Expr, "ccaas_bridge_") != strings.Count(q.Expr, `namespace=~"$namespace", job=~"$job"`) {
				t.Errorf("panel %q: query %q does not select every metric by $namespace and $job", title, q.Expr)
			}
		}
	}
}
