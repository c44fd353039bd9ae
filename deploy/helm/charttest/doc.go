// Package charttest renders the ccaas-presence-bridge Helm chart with helm
// and checks every manifest as typed Kubernetes objects, and builds the
// chart's Grafana dashboard with the Grafana foundation SDK ([Dashboard];
// `go generate ./...` writes it to [DashboardFile]). It is its own Go module
// so that k8s.io/api and the SDK stay out of the bridge's dependencies; run
// it with deploy/helm/check.sh or `go test ./...` in this directory.
package charttest
