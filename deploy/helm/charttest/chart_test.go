package charttest

import (
	"bytes"
	"fmt"
	"go/build"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"
)

const (
	chartDir    = "../ccaas-presence-bridge"
	examplesDir = "../examples"
	kubeVersion = "1.31.0"
	namespace   = "ccaas"
)

// secretEnv are the variables that hold a secret value: they may only come
// from a secretKeyRef.
var secretEnv = []string{"BRIDGE_TOKEN", "BRIDGE_NATS_PASSWORD", "BRIDGE_NATS_TOKEN", "AZURE_CLIENT_SECRET"}

// fileEnv are the variables naming a file that holds a secret: they must
// point into a read-only mount of a Secret.
var fileEnv = []string{"BRIDGE_TOKEN_FILE", "BRIDGE_NATS_CREDS", "BRIDGE_NATS_NKEY", "BRIDGE_NATS_CA", "BRIDGE_NATS_CERT", "BRIDGE_NATS_KEY"}

// rendered is the chart rendered once, decoded into typed objects.
type rendered struct {
	configMaps      map[string]*corev1.ConfigMap
	serviceAccounts []*corev1.ServiceAccount
	services        []*corev1.Service
	deployments     []*appsv1.Deployment
	pdbs            []*policyv1.PodDisruptionBudget
	serviceMonitors []*monitoringv1.ServiceMonitor
	prometheusRules []*monitoringv1.PrometheusRule
	testPods        []*corev1.Pod
}

// helmPath finds helm on PATH or where `go install` puts it.
func helmPath(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("helm"); err == nil {
		return p
	}
	gobin := os.Getenv("GOBIN")
	if gobin == "" {
		gobin = filepath.Join(build.Default.GOPATH, "bin")
	}
	if p := filepath.Join(gobin, "helm"); fileExists(p) {
		return p
	}
	t.Skip("helm is not installed, so the chart cannot be rendered: install it with " +
		"(cd /tmp && GOFLAGS=-mod=mod go install helm.sh/helm/v3/cmd/helm@v3.22.0); CI does")
	return ""
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir()
}

// helmTemplate runs helm template with args and returns stdout, or the
// error with stderr.
func helmTemplate(t *testing.T, args ...string) ([]byte, error) {
	t.Helper()
	all := append([]string{"template", "presence", chartDir, "-n", namespace, "--kube-version", kubeVersion}, args...)
	cmd := exec.Command(helmPath(t), all...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("helm %s: %w: %s", strings.Join(all, " "), err, stderr.String())
	}
	return stdout.Bytes(), nil
}

// render renders the chart and decodes every manifest strictly: a field
// the typed object does not know fails the test.
func render(t *testing.T, args ...string) *rendered {
	t.Helper()
	out, err := helmTemplate(t, args...)
	if err != nil {
		t.Fatal(err)
	}
	r := &rendered{configMaps: map[string]*corev1.ConfigMap{}}
	for i, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(out), -1) {
		if strings.TrimSpace(stripComments(doc)) == "" {
			continue
		}
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
			t.Fatalf("manifest %d: read kind: %v\n%s", i, err, doc)
		}
		decode := func(into any) {
			t.Helper()
			if err := yaml.UnmarshalStrict([]byte(doc), into); err != nil {
				t.Fatalf("manifest %d (%s %s): strict decode: %v\n%s", i, tm.APIVersion, tm.Kind, err, doc)
			}
		}
		switch gvk := tm.APIVersion + " " + tm.Kind; gvk {
		case "v1 ConfigMap":
			var o corev1.ConfigMap
			decode(&o)
			r.configMaps[o.Name] = &o
		case "v1 ServiceAccount":
			var o corev1.ServiceAccount
			decode(&o)
			r.serviceAccounts = append(r.serviceAccounts, &o)
		case "v1 Service":
			var o corev1.Service
			decode(&o)
			r.services = append(r.services, &o)
		case "apps/v1 Deployment":
			var o appsv1.Deployment
			decode(&o)
			r.deployments = append(r.deployments, &o)
		case "policy/v1 PodDisruptionBudget":
			var o policyv1.PodDisruptionBudget
			decode(&o)
			r.pdbs = append(r.pdbs, &o)
		case "monitoring.coreos.com/v1 ServiceMonitor":
			var o monitoringv1.ServiceMonitor
			decode(&o)
			r.serviceMonitors = append(r.serviceMonitors, &o)
		case "monitoring.coreos.com/v1 PrometheusRule":
			var o monitoringv1.PrometheusRule
			decode(&o)
			r.prometheusRules = append(r.prometheusRules, &o)
		case "v1 Pod":
			var o corev1.Pod
			decode(&o)
			r.testPods = append(r.testPods, &o)
		default:
			t.Fatalf("manifest %d: unexpected object %s (no Secret or other kind may be rendered)", i, gvk)
		}
	}
	return r
}

func stripComments(doc string) string {
	var b strings.Builder
	for line := range strings.SplitSeq(doc, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "#") {
			b.WriteString(line + "\n")
		}
	}
	return b.String()
}

// valuesCases are the value sets every structural check runs against: the
// minimal values (every other value at its default) and each example.
func valuesCases(t *testing.T) map[string]string {
	t.Helper()
	cases := map[string]string{"minimal": filepath.Join(chartDir, "ci", "minimal-values.yaml")}
	examples, err := filepath.Glob(filepath.Join(examplesDir, "*.yaml"))
	if err != nil || len(examples) == 0 {
		t.Fatalf("no examples in %s: %v", examplesDir, err)
	}
	for _, e := range examples {
		cases[strings.TrimSuffix(filepath.Base(e), ".yaml")] = e
	}
	return cases
}

func TestChartRendersSecureTypedObjects(t *testing.T) {
	vars := bridgeVars(t)
	for name, file := range valuesCases(t) {
		t.Run(name, func(t *testing.T) {
			values := readValues(t, file)
			r := render(t, "-f", file)
			if len(r.deployments) != 1 || len(r.services) != 1 || len(r.serviceAccounts) != 1 || len(r.testPods) != 1 {
				t.Fatalf("rendered %d deployments, %d services, %d service accounts, %d test pods; want one each",
					len(r.deployments), len(r.services), len(r.serviceAccounts), len(r.testPods))
			}
			d := r.deployments[0]
			pod := d.Spec.Template
			cm := r.configMaps[d.Name]
			if cm == nil {
				t.Fatalf("no ConfigMap %s with the BRIDGE_ variables", d.Name)
			}

			checkPodSecurity(t, "deployment", &pod.Spec)
			checkPodSecurity(t, "test pod", &r.testPods[0].Spec)
			checkProbes(t, pod.Spec.Containers[0])
			checkSecretReferences(t, "deployment", &pod.Spec, cm)
			checkSecretReferences(t, "test pod", &r.testPods[0].Spec, cm)
			checkVariablesKnown(t, vars, cm, pod.Spec.Containers[0])

			if sum := pod.Annotations["checksum/config"]; !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(sum) {
				t.Errorf("checksum/config annotation = %q, want a sha256", sum)
			}
			if got := cm.Data["BRIDGE_NATS_URL"]; got == "" || got != values.NATS.URL {
				t.Errorf("BRIDGE_NATS_URL = %q, want nats.url %q", got, values.NATS.URL)
			}
			for _, c := range pod.Spec.Containers {
				if c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
					t.Errorf("container %s: memory request and limit must be set", c.Name)
				}
			}

			sel := labels.SelectorFromSet(d.Spec.Selector.MatchLabels)
			if !sel.Matches(labels.Set(pod.Labels)) {
				t.Errorf("deployment selector %v does not match its pod labels %v", sel, pod.Labels)
			}
			svc := r.services[0]
			if !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(pod.Labels)) {
				t.Errorf("service selector %v does not match the pod labels", svc.Spec.Selector)
			}
			if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Name != "metrics" || svc.Spec.Ports[0].TargetPort.StrVal != "http" {
				t.Errorf("service ports = %+v, want one named metrics targeting port http", svc.Spec.Ports)
			}
			for _, pdb := range r.pdbs {
				s, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
				if err != nil || !s.Matches(labels.Set(pod.Labels)) {
					t.Errorf("PodDisruptionBudget selector %v does not match the pod labels (%v)", pdb.Spec.Selector, err)
				}
			}
			if values.PodDisruptionBudget.Enabled != nil && !*values.PodDisruptionBudget.Enabled {
				if len(r.pdbs) != 0 {
					t.Errorf("podDisruptionBudget.enabled=false rendered %d PodDisruptionBudgets", len(r.pdbs))
				}
			} else if len(r.pdbs) != 1 {
				t.Errorf("rendered %d PodDisruptionBudgets, want 1", len(r.pdbs))
			}
			for _, sm := range r.serviceMonitors {
				if len(sm.Spec.Endpoints) != 1 || sm.Spec.Endpoints[0].Port != "metrics" || sm.Spec.Endpoints[0].Path != "/metrics" {
					t.Errorf("ServiceMonitor endpoints = %+v, want port metrics, path /metrics", sm.Spec.Endpoints)
				}
				if !labels.SelectorFromSet(sm.Spec.Selector.MatchLabels).Matches(labels.Set(svc.Labels)) {
					t.Errorf("ServiceMonitor selector %v does not match the service labels", sm.Spec.Selector.MatchLabels)
				}
			}
			if values.Metrics.ServiceMonitor.Enabled != (len(r.serviceMonitors) == 1) {
				t.Errorf("metrics.serviceMonitor.enabled=%v rendered %d ServiceMonitors", values.Metrics.ServiceMonitor.Enabled, len(r.serviceMonitors))
			}

			tp := r.testPods[0]
			if tp.Annotations["helm.sh/hook"] != "test" || tp.Spec.RestartPolicy != corev1.RestartPolicyNever {
				t.Errorf("test pod: hook %q restart %q, want test and Never", tp.Annotations["helm.sh/hook"], tp.Spec.RestartPolicy)
			}
			if args := tp.Spec.Containers[0].Args; !slices.Equal(args, []string{"check"}) {
				t.Errorf("test pod args = %v, want [check]", args)
			}

			checkWorkloadIdentity(t, values, r)
			checkTerminationGrace(t, pod.Spec, cm)
		})
	}
}

// graceMargin is the time the pod gets after BRIDGE_SHUTDOWN_TIMEOUT before
// SIGKILL, as the chart derives it.
const graceMargin = 10 * time.Second

// checkTerminationGrace asserts that the pod's grace period leaves the
// bridge its whole shutdown timeout plus the margin.
func checkTerminationGrace(t *testing.T, spec corev1.PodSpec, cm *corev1.ConfigMap) {
	t.Helper()
	timeout, err := time.ParseDuration(cm.Data["BRIDGE_SHUTDOWN_TIMEOUT"])
	if err != nil {
		t.Fatalf("BRIDGE_SHUTDOWN_TIMEOUT %q: %v", cm.Data["BRIDGE_SHUTDOWN_TIMEOUT"], err)
	}
	want := int64(math.Ceil((timeout + graceMargin).Seconds()))
	if g := spec.TerminationGracePeriodSeconds; g == nil || *g < want {
		t.Errorf("terminationGracePeriodSeconds = %v, want at least %d (BRIDGE_SHUTDOWN_TIMEOUT %s + %s)", deref(g), want, timeout, graceMargin)
	}
}

func deref(p *int64) any {
	if p == nil {
		return nil
	}
	return *p
}

// TestTerminationGraceFollowsShutdownTimeout: the grace period is derived
// from config.shutdownTimeout (rounded up to whole seconds) plus the margin,
// unless set explicitly to at least that.
func TestTerminationGraceFollowsShutdownTimeout(t *testing.T) {
	minimal := []string{"-f", filepath.Join(chartDir, "ci", "minimal-values.yaml")}
	tests := []struct {
		name string
		set  []string
		want int64
	}{
		{"default 30s", nil, 40},
		{"minutes and seconds", []string{"config.shutdownTimeout=1m30s"}, 100},
		{"fraction rounded up", []string{"config.shutdownTimeout=2.5s"}, 13},
		{"milliseconds", []string{"config.shutdownTimeout=500ms"}, 11},
		{"hours", []string{"config.shutdownTimeout=1h2m"}, 3730},
		{"explicit and long enough", []string{"config.shutdownTimeout=20s", "terminationGracePeriodSeconds=90"}, 90},
		{"explicit at the minimum", []string{"terminationGracePeriodSeconds=40"}, 40},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := slices.Clone(minimal)
			for _, s := range tt.set {
				args = append(args, "--set", s)
			}
			r := render(t, args...)
			d := r.deployments[0]
			g := d.Spec.Template.Spec.TerminationGracePeriodSeconds
			if g == nil || *g != tt.want {
				t.Errorf("terminationGracePeriodSeconds = %v, want %d", deref(g), tt.want)
			}
			checkTerminationGrace(t, d.Spec.Template.Spec, r.configMaps[d.Name])
		})
	}
}

// checkPodSecurity asserts the secure defaults on the pod and each container.
func checkPodSecurity(t *testing.T, what string, spec *corev1.PodSpec) {
	t.Helper()
	psc := spec.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot {
		t.Errorf("%s: pod securityContext.runAsNonRoot must be true", what)
	}
	if psc == nil || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("%s: pod seccompProfile must be RuntimeDefault", what)
	}
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		t.Errorf("%s: automountServiceAccountToken must be false", what)
	}
	if spec.HostNetwork || spec.HostPID || spec.HostIPC {
		t.Errorf("%s: must not share host namespaces", what)
	}
	for _, c := range slices.Concat(spec.InitContainers, spec.Containers) {
		sc := c.SecurityContext
		switch {
		case sc == nil:
			t.Errorf("%s container %s: no securityContext", what, c.Name)
			continue
		case sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot:
			t.Errorf("%s container %s: runAsNonRoot must be true", what, c.Name)
		case sc.RunAsUser != nil && *sc.RunAsUser == 0:
			t.Errorf("%s container %s: runs as root", what, c.Name)
		}
		if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			t.Errorf("%s container %s: readOnlyRootFilesystem must be true", what, c.Name)
		}
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			t.Errorf("%s container %s: allowPrivilegeEscalation must be false", what, c.Name)
		}
		if sc.Privileged != nil && *sc.Privileged {
			t.Errorf("%s container %s: privileged", what, c.Name)
		}
		if sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0 {
			t.Errorf("%s container %s: capabilities must drop ALL and add none, got %+v", what, c.Name, sc.Capabilities)
		}
		if sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
			t.Errorf("%s container %s: seccompProfile must be RuntimeDefault", what, c.Name)
		}
	}
}

// checkProbes asserts startup and readiness on /readyz, liveness on
// /healthz, all on the named port that serves them.
func checkProbes(t *testing.T, c corev1.Container) {
	t.Helper()
	var port *corev1.ContainerPort
	for i := range c.Ports {
		if c.Ports[i].Name == "http" {
			port = &c.Ports[i]
		}
	}
	if port == nil {
		t.Fatalf("container %s has no port named http", c.Name)
	}
	for _, p := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{
		{"startup", c.StartupProbe, "/readyz"},
		{"readiness", c.ReadinessProbe, "/readyz"},
		{"liveness", c.LivenessProbe, "/healthz"},
	} {
		switch {
		case p.probe == nil || p.probe.HTTPGet == nil:
			t.Errorf("%s probe: missing or not an HTTP GET", p.name)
		case p.probe.HTTPGet.Path != p.path:
			t.Errorf("%s probe path = %s, want %s", p.name, p.probe.HTTPGet.Path, p.path)
		case p.probe.HTTPGet.Port.StrVal != port.Name:
			t.Errorf("%s probe port = %s, want the named port %s", p.name, p.probe.HTTPGet.Port.String(), port.Name)
		}
	}
}

// checkSecretReferences asserts that no secret value is inline: secret
// variables come from secretKeyRef, file variables point into read-only
// Secret mounts holding that key, and the ConfigMap carries no secret.
func checkSecretReferences(t *testing.T, what string, spec *corev1.PodSpec, cm *corev1.ConfigMap) {
	t.Helper()
	for _, name := range slices.Concat(secretEnv, fileEnv) {
		if _, ok := cm.Data[name]; ok {
			t.Errorf("ConfigMap %s sets %s: secrets and their paths belong in the pod spec, by reference", cm.Name, name)
		}
	}
	volumes := map[string]corev1.Volume{}
	for _, v := range spec.Volumes {
		volumes[v.Name] = v
		if v.Secret != nil && (v.Secret.DefaultMode == nil || *v.Secret.DefaultMode&0o007 != 0) {
			t.Errorf("%s: secret volume %s is readable by others (mode %v)", what, v.Name, v.Secret.DefaultMode)
		}
	}
	for _, c := range spec.Containers {
		for _, m := range c.VolumeMounts {
			if v := volumes[m.Name]; (v.Secret != nil || v.ConfigMap != nil) && !m.ReadOnly {
				t.Errorf("%s container %s: mount %s of a secret or config map is not read-only", what, c.Name, m.Name)
			}
		}
		for _, e := range c.Env {
			switch {
			case slices.Contains(secretEnv, e.Name):
				if e.Value != "" || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
					t.Errorf("%s container %s: %s must come from a secretKeyRef, not a value", what, c.Name, e.Name)
				}
			case slices.Contains(fileEnv, e.Name):
				if !pathInSecretMount(e.Value, c.VolumeMounts, volumes) {
					t.Errorf("%s container %s: %s=%s is not a key of a read-only Secret mount", what, c.Name, e.Name, e.Value)
				}
			}
		}
	}
}

// pathInSecretMount reports whether path is a key projected from a Secret
// volume mounted read-only.
func pathInSecretMount(path string, mounts []corev1.VolumeMount, volumes map[string]corev1.Volume) bool {
	for _, m := range mounts {
		v := volumes[m.Name]
		if v.Secret == nil || !m.ReadOnly || filepath.Dir(path) != m.MountPath {
			continue
		}
		for _, item := range v.Secret.Items {
			if item.Path == filepath.Base(path) {
				return true
			}
		}
	}
	return false
}

// checkVariablesKnown asserts that every BRIDGE_ variable the chart sets is
// one the bridge reads.
func checkVariablesKnown(t *testing.T, vars map[string]bool, cm *corev1.ConfigMap, c corev1.Container) {
	t.Helper()
	names := make([]string, 0, len(cm.Data)+len(c.Env))
	for k := range cm.Data {
		names = append(names, k)
	}
	for _, e := range c.Env {
		names = append(names, e.Name)
	}
	for _, n := range names {
		if strings.HasPrefix(n, "BRIDGE_") && !vars[n] {
			t.Errorf("the chart sets %s, which the bridge does not read", n)
		}
	}
}

// bridgeVars reads the variable names from the envconfig tags of
// internal/config, the one list of what the bridge reads.
func bridgeVars(t *testing.T) map[string]bool {
	t.Helper()
	src, err := os.ReadFile("../../../internal/config/config.go")
	if err != nil {
		t.Fatalf("read the bridge's configuration: %v", err)
	}
	vars := map[string]bool{}
	for _, m := range regexp.MustCompile(`envconfig:"(BRIDGE_[A-Z0-9_]+)"`).FindAllStringSubmatch(string(src), -1) {
		vars[m[1]] = true
	}
	if len(vars) < 10 {
		t.Fatalf("found only %d BRIDGE_ variables in internal/config", len(vars))
	}
	return vars
}

// values is the part of the chart values the assertions compare against.
type values struct {
	NATS struct {
		URL string `json:"url"`
	} `json:"nats"`
	Auth struct {
		Azure struct {
			ClientID         string `json:"clientId"`
			WorkloadIdentity bool   `json:"workloadIdentity"`
		} `json:"azure"`
	} `json:"auth"`
	Metrics struct {
		ServiceMonitor struct {
			Enabled bool `json:"enabled"`
		} `json:"serviceMonitor"`
	} `json:"metrics"`
	PodDisruptionBudget struct {
		Enabled *bool `json:"enabled"`
	} `json:"podDisruptionBudget"`
}

func readValues(t *testing.T, file string) values {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("read %s: %v", file, err)
	}
	var v values
	if err := yaml.Unmarshal(b, &v); err != nil {
		t.Fatalf("parse %s: %v", file, err)
	}
	return v
}

// checkWorkloadIdentity asserts the ServiceAccount annotation and pod label
// Azure workload identity needs, and that neither appears without it.
func checkWorkloadIdentity(t *testing.T, v values, r *rendered) {
	t.Helper()
	sa := r.serviceAccounts[0]
	pod := r.deployments[0].Spec.Template
	if pod.Spec.ServiceAccountName != sa.Name {
		t.Errorf("pod service account %q, want %q", pod.Spec.ServiceAccountName, sa.Name)
	}
	gotID := sa.Annotations["azure.workload.identity/client-id"]
	gotUse := pod.Labels["azure.workload.identity/use"]
	if v.Auth.Azure.WorkloadIdentity {
		if gotID != v.Auth.Azure.ClientID || gotUse != "true" {
			t.Errorf("workload identity: client-id annotation %q (want %q), pod label use=%q (want true)", gotID, v.Auth.Azure.ClientID, gotUse)
		}
		for _, e := range pod.Spec.Containers[0].Env {
			if e.Name == "AZURE_CLIENT_ID" || e.Name == "AZURE_TENANT_ID" {
				t.Errorf("workload identity: %s is set by the webhook, the chart must not set it", e.Name)
			}
		}
	} else if gotID != "" || gotUse != "" {
		t.Errorf("no workload identity, yet client-id annotation %q, pod label use=%q", gotID, gotUse)
	}
}

func TestChecksumFollowsConfigButNotAgents(t *testing.T) {
	minimal := filepath.Join(chartDir, "ci", "minimal-values.yaml")
	sum := func(args ...string) string {
		r := render(t, append([]string{"-f", minimal}, args...)...)
		return r.deployments[0].Spec.Template.Annotations["checksum/config"]
	}
	base := sum()
	tests := []struct {
		name    string
		set     string
		changes bool
	}{
		{"poll interval", "config.pollInterval=20s", true},
		{"lease ttl", "lease.ttl=30s", true},
		{"nats url", "nats.url=nats://other:4222", true},
		// The bridge re-reads the agents file, so a new list needs no restart.
		{"agents", "agents.ids={5b0f7c7e-1d2a-ee11-904c-00224808a167}", false},
		{"replicas", "replicaCount=3", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := sum("--set", tt.set); (got != base) != tt.changes {
				t.Errorf("--set %s: checksum changed = %v, want %v", tt.set, got != base, tt.changes)
			}
		})
	}
}

func TestChartRejectsBadValues(t *testing.T) {
	minimal := []string{"-f", filepath.Join(chartDir, "ci", "minimal-values.yaml")}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no nats url", []string{"--set", "config.orgUrl=https://contoso.crm.dynamics.com", "--set", "agents.ids={394382b6-a4d4-ee11-904c-00224808a166}"}, "nats.url is required"},
		{"typo in a key", append(minimal, "--set", "lease.tll=5s"), "additional properties 'tll' not allowed"},
		{"bad duration", append(minimal, "--set", "config.pollInterval=10 seconds"), "pollInterval"},
		{"agent not a GUID", []string{"--set", "nats.url=nats://n:4222", "--set", "config.orgUrl=https://c.crm.dynamics.com", "--set", "agents.ids={agent-1}"}, "agents/ids/0"},
		{"secret inline in extraEnv", append(minimal, "--set", "extraEnv[0].name=BRIDGE_NATS_PASSWORD", "--set", "extraEnv[0].value=hunter2"), "holds a secret value inline"},
		{"two pollers without lease", append(minimal, "--set", "lease.enabled=false"), "lease.enabled must be true"},
		{"grace period shorter than the shutdown", append(minimal, "--set", "config.shutdownTimeout=1m", "--set", "terminationGracePeriodSeconds=60"), "terminationGracePeriodSeconds 60 is too short for config.shutdownTimeout 1m: at least 70"},
		{"client secret without tenant", append(minimal, "--set", "auth.azure.clientId=c", "--set", "auth.azure.clientSecret.existingSecret=s"), "auth.azure.clientSecret needs"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := helmTemplate(t, tt.args...)
			if err == nil {
				t.Fatalf("rendered without error, want one containing %q:\n%s", tt.want, out)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v\nwant it to contain %q", err, tt.want)
			}
		})
	}
}
