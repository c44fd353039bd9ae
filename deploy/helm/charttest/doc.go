// Package charttest renders the ccaas-presence-bridge Helm chart with helm
// and checks every manifest as typed Kubernetes objects. It is its own Go
// module so that k8s.io/api stays out of the bridge's dependencies; run it
// with deploy/helm/check.sh or `go test ./...` in this directory.
package charttest
