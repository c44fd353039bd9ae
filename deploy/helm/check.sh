#!/usr/bin/env bash
# Checks the Helm chart: helm lint and helm template with the minimal values
# (every other value at its default) and with each example, then renders
# that must fail do fail with the expected message, renders the operations
# kit (PrometheusRule and Grafana dashboard), then runs the Go chart test,
# which decodes every manifest into typed Kubernetes objects and checks the
# kit against files/alerts.yaml and the dashboard generator.
#
# Needs helm on PATH; .ci/run installs it with
#   (cd /tmp && GOFLAGS=-mod=mod go install helm.sh/helm/v3/cmd/helm@v3.22.0)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
chart="$here/ccaas-presence-bridge"
kube_version="${KUBE_VERSION:-1.31.0}"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

# go install puts helm in GOBIN or GOPATH/bin, which may not be on PATH.
PATH="$PATH:$(go env GOBIN):$(go env GOPATH)/bin"
if ! command -v helm >/dev/null 2>&1; then
	echo "check.sh: helm is not on PATH; install it with: (cd /tmp && GOFLAGS=-mod=mod go install helm.sh/helm/v3/cmd/helm@v3.22.0)" >&2
	exit 1
fi

values=("$chart/ci/minimal-values.yaml" "$here"/examples/*.yaml)
for v in "${values[@]}"; do
	name="$(basename "$v" .yaml)"
	echo "== helm lint ($name)"
	helm lint --strict "$chart" -f "$v" --kube-version "$kube_version"
	echo "== helm template ($name)"
	helm template presence "$chart" -n ccaas -f "$v" --kube-version "$kube_version" >"$out/$name.yaml"
	echo "rendered $(grep -c '^kind:' "$out/$name.yaml") objects"
done

# Renders that must fail, and the message they must fail with.
fails=0
must_fail() {
	local want="$1"
	shift
	local got
	if got="$(helm template presence "$chart" --kube-version "$kube_version" "$@" 2>&1)"; then
		echo "FAIL: helm template $* rendered, want an error containing: $want" >&2
		fails=$((fails + 1))
	elif [[ "$got" != *"$want"* ]]; then
		echo "FAIL: helm template $* failed with: $got; want: $want" >&2
		fails=$((fails + 1))
	else
		echo "ok: rejected ($want)"
	fi
}
min=(-f "$chart/ci/minimal-values.yaml")
echo "== renders that must fail"
must_fail "nats.url is required" --set config.orgUrl=https://contoso.crm.dynamics.com --set 'agents.ids={394382b6-a4d4-ee11-904c-00224808a166}'
must_fail "config.orgUrl is required" --set nats.url=nats://nats:4222 --set 'agents.ids={394382b6-a4d4-ee11-904c-00224808a166}'
must_fail "agents.ids or agents.existingConfigMap.name is required" --set nats.url=nats://nats:4222 --set config.orgUrl=https://contoso.crm.dynamics.com
must_fail "additional properties 'pollIntervall' not allowed" "${min[@]}" --set config.pollIntervall=5s
must_fail "lease.enabled must be true with more than one replica" "${min[@]}" --set lease.enabled=false
must_fail "set at most one NATS authentication" "${min[@]}" --set nats.credsSecret.name=a --set nats.user=u
must_fail "terminationGracePeriodSeconds 20 is too short" "${min[@]}" --set terminationGracePeriodSeconds=20
must_fail "holds a secret value inline" "${min[@]}" --set 'extraEnv[0].name=BRIDGE_TOKEN' --set 'extraEnv[0].value=secret'
must_fail "runbookUrl" "${min[@]}" --set metrics.prometheusRule.runbookUrl=https://wiki.example.com/runbooks#top
if ((fails > 0)); then
	exit 1
fi

# The operations kit: the alert rules and the dashboard render when enabled
# (the Go chart test compares them with files/alerts.yaml and
# files/dashboard.json).
echo "== helm template (prometheusRule and grafanaDashboard on)"
helm template presence "$chart" -n ccaas "${min[@]}" --kube-version "$kube_version" \
	--set metrics.prometheusRule.enabled=true --set metrics.grafanaDashboard.enabled=true >"$out/kit.yaml"
for kind in PrometheusRule ConfigMap; do
	echo "rendered $(grep -c "^kind: $kind\$" "$out/kit.yaml") $kind objects"
done
grep -q '^kind: PrometheusRule$' "$out/kit.yaml"
grep -q 'grafana_dashboard: "1"' "$out/kit.yaml"

echo "== go test (chart rendered as typed Kubernetes objects)"
cd "$here/charttest"
GOFLAGS=-mod=mod go test -count=1 ./...
