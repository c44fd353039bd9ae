package charttest

//go:generate go run ./gendashboard

import (
	"encoding/json"
	"fmt"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/common"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/prometheus"
	"github.com/grafana/grafana-foundation-sdk/go/stat"
	"github.com/grafana/grafana-foundation-sdk/go/timeseries"
)

// DashboardFile is where the chart keeps the generated dashboard, relative to
// this directory (where go generate runs gendashboard);
// templates/dashboard-configmap.yaml ships it.
const DashboardFile = "../ccaas-presence-bridge/files/dashboard.json"

// DashboardUID is the dashboard's stable UID, so links to it survive a
// re-import.
const DashboardUID = "ccaas-presence-bridge"

// ServiceProtectionBudget is Dataverse's service-protection limit per user
// (each poll is charged to the impersonated agent): 6,000 requests in a
// sliding 5 minutes, as requests per second.
const ServiceProtectionBudget = 6000.0 / 300.0

// sel is the label selector every query applies: the dashboard's namespace
// and job variables.
const sel = `namespace=~"$namespace", job=~"$job"`

// q builds a Prometheus target over the dashboard's datasource variable.
func q(expr, legend string) *prometheus.DataqueryBuilder {
	return prometheus.NewDataqueryBuilder().
		Datasource(datasource()).
		Expr(expr).
		LegendFormat(legend)
}

// datasource refers to the dashboard's data source variable.
func datasource() common.DataSourceRef {
	return common.DataSourceRef{Type: cog.ToPtr("prometheus"), Uid: cog.ToPtr("${datasource}")}
}

// series is a half-width time series panel with a legend below.
func series(title, description, unit string) *timeseries.PanelBuilder {
	return timeseries.NewPanelBuilder().
		Title(title).
		Description(description).
		Datasource(datasource()).
		Unit(unit).
		Height(8).
		Span(12).
		Legend(common.NewVizLegendOptionsBuilder().
			DisplayMode(common.LegendDisplayModeList).
			Placement(common.LegendPlacementBottom).
			ShowLegend(true))
}

// stacked stacks the panel's series, for parts of a whole.
func stacked(b *timeseries.PanelBuilder) *timeseries.PanelBuilder {
	return b.Stacking(common.NewStackingConfigBuilder().Mode(common.StackingModeNormal)).FillOpacity(40)
}

// thresholds colours a value by absolute steps; the first step's value is
// nil (minus infinity).
func thresholds(steps ...dashboard.Threshold) *dashboard.ThresholdsConfigBuilder {
	return dashboard.NewThresholdsConfigBuilder().Mode(dashboard.ThresholdsModeAbsolute).Steps(steps)
}

func step(value *float64, color string) dashboard.Threshold {
	return dashboard.Threshold{Value: value, Color: color}
}

// single is a quarter-width stat panel of one query, coloured by t.
func single(title, description, unit string, expr string, t *dashboard.ThresholdsConfigBuilder) *stat.PanelBuilder {
	return stat.NewPanelBuilder().
		Title(title).
		Description(description).
		Datasource(datasource()).
		Unit(unit).
		Height(4).
		Span(6).
		Thresholds(t).
		ColorMode(common.BigValueColorModeBackground).
		GraphMode(common.BigValueGraphModeArea).
		WithTarget(q(expr, ""))
}

// Dashboard builds the bridge's Grafana dashboard: polling (results by
// class, request rate against the service-protection budget, latency),
// agents (by state, stale), publishing (latency, backlog, events, errors),
// leadership and tokens. Every query reads metrics the bridge exports
// (cmd/bridge checks the names against a running bridge).
func Dashboard() (dashboard.Dashboard, error) {
	budget := fmt.Sprintf("%g", ServiceProtectionBudget)
	b := dashboard.NewDashboardBuilder("CCaaS presence bridge").
		Uid(DashboardUID).
		Description("Polling of Dynamics 365 Contact Center presence, publishing to NATS JetStream, leadership and tokens of the CCaaS presence bridge.").
		Tags([]string{"ccaas", "presence-bridge", "nats"}).
		Editable().
		Tooltip(dashboard.DashboardCursorSyncCrosshair).
		Refresh("30s").
		Time("now-3h", "now").
		Timezone(common.TimeZoneBrowser).
		WithVariable(dashboard.NewDatasourceVariableBuilder("datasource").
			Label("Data source").
			Type("prometheus")).
		WithVariable(dashboard.NewQueryVariableBuilder("namespace").
			Label("Namespace").
			Datasource(datasource()).
			Query(dashboard.StringOrMap{String: cog.ToPtr("label_values(ccaas_bridge_build_info, namespace)")}).
			Refresh(dashboard.VariableRefreshOnTimeRangeChanged).
			Sort(dashboard.VariableSortAlphabeticalAsc).
			IncludeAll(true).
			AllValue(".*").
			Multi(true)).
		WithVariable(dashboard.NewQueryVariableBuilder("job").
			Label("Job").
			Datasource(datasource()).
			Query(dashboard.StringOrMap{String: cog.ToPtr(`label_values(ccaas_bridge_build_info{namespace=~"$namespace"}, job)`)}).
			Refresh(dashboard.VariableRefreshOnTimeRangeChanged).
			Sort(dashboard.VariableSortAlphabeticalAsc).
			IncludeAll(true).
			AllValue(".*").
			Multi(true)).

		// Overview: the numbers an operator looks at first.
		WithRow(dashboard.NewRowBuilder("Overview")).
		WithPanel(single("Time since the last successful poll",
			"Age of the newest successful CCaaS_GetPresence poll of any agent (alert CCaaSBridgeNoSuccessfulPoll above 5 minutes).",
			"s", `time() - max(ccaas_bridge_last_successful_poll_timestamp_seconds{`+sel+`})`,
			thresholds(step(nil, "green"), step(cog.ToPtr(60.0), "orange"), step(cog.ToPtr(300.0), "red")))).
		WithPanel(single("Stale agents",
			"Agents without a successful poll for BRIDGE_STALE_AFTER: the bridge published presence.stale for them (alert CCaaSBridgeAgentsStale).",
			"short", `sum(ccaas_bridge_stale_agents{`+sel+`})`,
			thresholds(step(nil, "green"), step(cog.ToPtr(1.0), "red")))).
		WithPanel(single("Shards led",
			"Shards whose lease a replica holds now (alert CCaaSBridgeNoLeader when a shard has none).",
			"short", `count(max by (shard) (ccaas_bridge_leader{`+sel+`}) == 1)`,
			thresholds(step(nil, "red"), step(cog.ToPtr(1.0), "green")))).
		WithPanel(single("Oldest unacknowledged event",
			"Age of the oldest event the publisher holds without a JetStream acknowledgement (alert CCaaSBridgePublishBacklog above 60 s).",
			"s", `max(ccaas_bridge_publish_oldest_unpublished_seconds{`+sel+`})`,
			thresholds(step(nil, "green"), step(cog.ToPtr(10.0), "orange"), step(cog.ToPtr(60.0), "red")))).

		// Polling.
		WithRow(dashboard.NewRowBuilder("Polling")).
		WithPanel(stacked(series("Poll results by class",
			"CCaaS_GetPresence polls per second by result: ok or the error class (permanent, unauthorized, token, rate_limited, server_error, transport, malformed).",
			"reqps")).
			WithTarget(q(`sum by (result) (rate(ccaas_bridge_polls_total{`+sel+`}[$__rate_interval]))`, "{{result}}"))).
		WithPanel(series("Request rate per agent against the service-protection budget",
			"Each poll is charged to the impersonated agent, whose budget is 6,000 requests in a sliding 5 minutes ("+budget+"/s). The share of 429s shows how close the organisation is to it.",
			"reqps").
			Min(0).
			WithTarget(q(`sum(rate(ccaas_bridge_polls_total{`+sel+`}[$__rate_interval])) / clamp_min(sum(ccaas_bridge_agents{`+sel+`}), 1)`, "requests per agent")).
			WithTarget(q(`vector(`+budget+`)`, "service-protection budget per agent")).
			WithTarget(q(`sum(rate(ccaas_bridge_polls_total{result="rate_limited", `+sel+`}[$__rate_interval])) / clamp_min(sum(ccaas_bridge_agents{`+sel+`}), 1)`, "429 answers per agent"))).
		WithPanel(series("Client rate-limit factor",
			"1 normally; below 1 while the client slows itself down after a burst of 429s.",
			"percentunit").
			Min(0).
			Max(1).
			WithTarget(q(`min by (pod) (ccaas_bridge_client_rate_limit_factor{`+sel+`})`, "{{pod}}"))).
		WithPanel(series("Poll latency",
			"Time per poll, token acquisition and 401 retry included.",
			"s").
			WithTarget(q(`histogram_quantile(0.5, sum by (le) (rate(ccaas_bridge_poll_duration_seconds_bucket{`+sel+`}[$__rate_interval])))`, "p50")).
			WithTarget(q(`histogram_quantile(0.99, sum by (le) (rate(ccaas_bridge_poll_duration_seconds_bucket{`+sel+`}[$__rate_interval])))`, "p99"))).

		// Agents.
		WithRow(dashboard.NewRowBuilder("Agents")).
		WithPanel(stacked(series("Agents by state",
			"Configured agents by poll state: pending, healthy, backing_off, rate_limited, unpollable, malformed.",
			"short")).
			WithTarget(q(`sum by (state) (ccaas_bridge_agents{`+sel+`})`, "{{state}}"))).
		WithPanel(series("Stale agents",
			"Agents the bridge cannot see: presence.stale published, presence.resumed not yet.",
			"short").
			Min(0).
			WithTarget(q(`sum(ccaas_bridge_stale_agents{`+sel+`})`, "stale agents"))).

		// Publishing.
		WithRow(dashboard.NewRowBuilder("Publishing")).
		WithPanel(series("Publish latency",
			"Time from enqueueing an event to its JetStream acknowledgement.",
			"s").
			WithTarget(q(`histogram_quantile(0.5, sum by (le) (rate(ccaas_bridge_publish_latency_seconds_bucket{`+sel+`}[$__rate_interval])))`, "p50")).
			WithTarget(q(`histogram_quantile(0.99, sum by (le) (rate(ccaas_bridge_publish_latency_seconds_bucket{`+sel+`}[$__rate_interval])))`, "p99"))).
		WithPanel(series("Publish backlog",
			"Events held by the publisher (queued or awaiting acknowledgement, bounded by BRIDGE_PUBLISH_MAX_PENDING) and the age of the oldest.",
			"short").
			Min(0).
			WithTarget(q(`sum by (pod) (ccaas_bridge_publish_window_in_use{`+sel+`})`, "events held {{pod}}")).
			WithTarget(q(`max by (pod) (ccaas_bridge_publish_oldest_unpublished_seconds{`+sel+`})`, "oldest (s) {{pod}}")).
			OverrideByRegexp("^oldest.*", []dashboard.DynamicConfigValue{
				{Id: "unit", Value: "s"},
				{Id: "custom.axisPlacement", Value: "right"},
			})).
		WithPanel(stacked(series("Events published by type",
			"Events acknowledged by JetStream per second, by CloudEvent type.",
			"ops")).
			WithTarget(q(`sum by (type) (rate(ccaas_bridge_events_published_total{`+sel+`}[$__rate_interval]))`, "{{type}}"))).
		WithPanel(series("Publish errors and NATS connection",
			"Failed publish attempts by reason (retried with the same message ID), and NATS disconnects and reconnects.",
			"ops").
			WithTarget(q(`sum by (reason) (rate(ccaas_bridge_publish_errors_total{`+sel+`}[$__rate_interval]))`, "error: {{reason}}")).
			WithTarget(q(`sum(rate(ccaas_bridge_nats_disconnects_total{`+sel+`}[$__rate_interval]))`, "NATS disconnects")).
			WithTarget(q(`sum(rate(ccaas_bridge_nats_reconnects_total{`+sel+`}[$__rate_interval]))`, "NATS reconnects"))).

		// Leadership and tokens.
		WithRow(dashboard.NewRowBuilder("Leadership and tokens")).
		WithPanel(series("Leadership",
			"1 while the replica holds the shard's lease and polls its agents, 0 in standby; lease acquisitions, releases and losses.",
			"short").
			Min(0).
			WithTarget(q(`max by (shard, pod) (ccaas_bridge_leader{`+sel+`})`, "shard {{shard}} on {{pod}}")).
			WithTarget(q(`sum by (change) (increase(ccaas_bridge_lease_changes_total{`+sel+`}[$__rate_interval]))`, "lease {{change}}"))).
		WithPanel(series("Token refreshes",
			"Bearer tokens obtained from Entra ID (or re-read from the token file), and failed attempts (alert CCaaSBridgeTokenFailures).",
			"short").
			Min(0).
			WithTarget(q(`sum(increase(ccaas_bridge_token_refreshes_total{`+sel+`}[$__rate_interval]))`, "refreshes")).
			WithTarget(q(`sum(increase(ccaas_bridge_token_failures_total{`+sel+`}[$__rate_interval]))`, "failures")))

	d, err := b.Build()
	if err != nil {
		return dashboard.Dashboard{}, fmt.Errorf("build the dashboard: %w", err)
	}
	// Grafana wants a unique ID per panel and a reference per query; the
	// builders leave both to the caller.
	for i, p := range d.Panels {
		id := uint32(i + 1)
		switch {
		case p.Panel != nil:
			p.Panel.Id = &id
			for j, t := range p.Panel.Targets {
				ref := string(rune('A' + j))
				switch q := t.(type) {
				case prometheus.Dataquery:
					q.RefId = &ref
					p.Panel.Targets[j] = q
				case *prometheus.Dataquery:
					q.RefId = &ref
				default:
					return dashboard.Dashboard{}, fmt.Errorf("panel %d: query of unexpected type %T", id, t)
				}
			}
		case p.RowPanel != nil:
			p.RowPanel.Id = id
		}
	}
	return d, nil
}

// DashboardJSON is the dashboard as the chart ships it: indented JSON with a
// final newline.
func DashboardJSON() ([]byte, error) {
	d, err := Dashboard()
	if err != nil {
		return nil, err
	}
	out, err := json.MarshalIndent(d, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode the dashboard: %w", err)
	}
	return append(out, '\n'), nil
}

// panelTitles lists the titles of the dashboard's panels and rows, in order.
func panelTitles(d dashboard.Dashboard) []string {
	var titles []string
	for _, p := range d.Panels {
		switch {
		case p.Panel != nil && p.Panel.Title != nil:
			titles = append(titles, *p.Panel.Title)
		case p.RowPanel != nil && p.RowPanel.Title != nil:
			titles = append(titles, "row: "+*p.RowPanel.Title)
		}
	}
	return titles
}
