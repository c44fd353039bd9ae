{{/* Chart name. */}}
{{- define "bridge.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release name and chart name, at most 63 characters. */}}
{{- define "bridge.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Chart name and version for the helm.sh/chart label. */}}
{{- define "bridge.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Standard labels. */}}
{{- define "bridge.labels" -}}
helm.sh/chart: {{ include "bridge.chart" . }}
{{ include "bridge.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ccaas-presence-bridge
{{- end }}

{{/* Selector labels. */}}
{{- define "bridge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "bridge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* ServiceAccount name. */}}
{{- define "bridge.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "bridge.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Image reference: digest wins over tag. */}}
{{- define "bridge.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/* Name and key of the ConfigMap holding the agent list. */}}
{{- define "bridge.agentsConfigMap" -}}
{{- .Values.agents.existingConfigMap.name | default (printf "%s-agents" (include "bridge.fullname" .)) }}
{{- end }}
{{- define "bridge.agentsKey" -}}
{{- if .Values.agents.existingConfigMap.name }}{{ .Values.agents.existingConfigMap.key }}{{ else }}agents.txt{{ end }}
{{- end }}

{{/*
Validation of values that the schema cannot express; fails the render with a
message naming the value.
*/}}
{{- define "bridge.validate" -}}
{{- $v := .Values }}
{{- if not $v.nats.url }}
{{- fail "nats.url is required: the NATS servers, e.g. nats://nats.nats.svc:4222 (the embedded NATS is not used in Kubernetes)" }}
{{- end }}
{{- if not $v.config.orgUrl }}
{{- fail "config.orgUrl is required: the Dynamics 365 organisation URL, e.g. https://contoso.crm.dynamics.com" }}
{{- end }}
{{- if and (not $v.agents.ids) (not $v.agents.existingConfigMap.name) }}
{{- fail "agents.ids or agents.existingConfigMap.name is required: the agents to poll" }}
{{- end }}
{{- if and $v.agents.ids $v.agents.existingConfigMap.name }}
{{- fail "set only one of agents.ids and agents.existingConfigMap.name" }}
{{- end }}
{{- $natsAuth := 0 }}
{{- if $v.nats.credsSecret.name }}{{ $natsAuth = add1 $natsAuth }}{{ end }}
{{- if $v.nats.nkeySecret.name }}{{ $natsAuth = add1 $natsAuth }}{{ end }}
{{- if $v.nats.user }}{{ $natsAuth = add1 $natsAuth }}{{ end }}
{{- if $v.nats.tokenSecret.name }}{{ $natsAuth = add1 $natsAuth }}{{ end }}
{{- if gt $natsAuth 1 }}
{{- fail "set at most one NATS authentication: nats.credsSecret, nats.nkeySecret, nats.user with nats.passwordSecret, or nats.tokenSecret" }}
{{- end }}
{{- if and $v.nats.passwordSecret.name (not $v.nats.user) }}
{{- fail "nats.passwordSecret needs nats.user" }}
{{- end }}
{{- if ne (empty $v.nats.tls.certKey) (empty $v.nats.tls.keyKey) }}
{{- fail "nats.tls.certKey and nats.tls.keyKey must be set together" }}
{{- end }}
{{- if and (or $v.nats.tls.certKey $v.nats.tls.keyKey) (not $v.nats.tls.existingSecret) }}
{{- fail "nats.tls.certKey and nats.tls.keyKey need nats.tls.existingSecret" }}
{{- end }}
{{- if and $v.auth.token.existingSecret (or $v.auth.azure.workloadIdentity $v.auth.azure.clientSecret.existingSecret) }}
{{- fail "set either auth.token.existingSecret or Entra ID (auth.azure), not both" }}
{{- end }}
{{- if and $v.auth.azure.workloadIdentity $v.auth.azure.clientSecret.existingSecret }}
{{- fail "set either auth.azure.workloadIdentity or auth.azure.clientSecret, not both" }}
{{- end }}
{{- if and $v.auth.azure.workloadIdentity (not $v.auth.azure.clientId) }}
{{- fail "auth.azure.workloadIdentity needs auth.azure.clientId" }}
{{- end }}
{{- if and $v.auth.azure.clientSecret.existingSecret (or (not $v.auth.azure.clientId) (not $v.auth.azure.tenantId)) }}
{{- fail "auth.azure.clientSecret needs auth.azure.clientId and auth.azure.tenantId" }}
{{- end }}
{{- range $v.extraEnv }}
{{- if and (has .name (list "BRIDGE_TOKEN" "BRIDGE_NATS_PASSWORD" "BRIDGE_NATS_TOKEN" "AZURE_CLIENT_SECRET")) (hasKey . "value") }}
{{- fail (printf "extraEnv %s holds a secret value inline: reference a Secret with valueFrom.secretKeyRef, or use auth.* and nats.* instead" .name) }}
{{- end }}
{{- end }}
{{- if and (not $v.lease.enabled) (gt (int $v.replicaCount) 1) }}
{{- fail "lease.enabled must be true with more than one replica: without leases every pod would poll and publish" }}
{{- end }}
{{- if and (not $v.lease.enabled) (gt (int $v.lease.shardCount) 1) }}
{{- fail "lease.shardCount above 1 needs lease.enabled" }}
{{- end }}
{{- $minGrace := include "bridge.minTerminationGrace" . | int }}
{{- if and (not (kindIs "invalid" $v.terminationGracePeriodSeconds)) (lt (int $v.terminationGracePeriodSeconds) $minGrace) }}
{{- fail (printf "terminationGracePeriodSeconds %d is too short for config.shutdownTimeout %s: at least %d (the shutdown timeout plus %ds to exit); leave it empty to derive it" (int $v.terminationGracePeriodSeconds) $v.config.shutdownTimeout $minGrace (include "bridge.shutdownGraceMargin" . | int)) }}
{{- end }}
{{- end }}

{{/*
Seconds the pod gets after the bridge's shutdown timeout before SIGKILL: the
process exit and the kubelet's own latency. The only place the margin is set.
*/}}
{{- define "bridge.shutdownGraceMargin" -}}
10
{{- end }}

{{/*
Whole seconds of a Go duration string ("30s", "1m30s", "2.5s", "500ms"),
rounded up.
*/}}
{{- define "bridge.durationSeconds" -}}
{{- $units := dict "ns" 0.000000001 "us" 0.000001 "µs" 0.000001 "ms" 0.001 "s" 1.0 "m" 60.0 "h" 3600.0 }}
{{- $total := 0.0 }}
{{- range regexFindAll "[0-9]+(\\.[0-9]+)?(ns|us|µs|ms|s|m|h)" (toString .) -1 }}
{{- $num := regexFind "^[0-9]+(\\.[0-9]+)?" . | float64 }}
{{- $unit := regexReplaceAll "^[0-9]+(\\.[0-9]+)?" . "" }}
{{- $total = addf $total (mulf $num (get $units $unit)) }}
{{- end }}
{{- ceil $total | int }}
{{- end }}

{{/*
The least terminationGracePeriodSeconds that lets the bridge finish its
shutdown: BRIDGE_SHUTDOWN_TIMEOUT (config.shutdownTimeout) plus the margin.
*/}}
{{- define "bridge.minTerminationGrace" -}}
{{- add (include "bridge.durationSeconds" .Values.config.shutdownTimeout | int) (include "bridge.shutdownGraceMargin" . | int) }}
{{- end }}

{{/*
terminationGracePeriodSeconds: the value when set (validated above), else
derived from config.shutdownTimeout.
*/}}
{{- define "bridge.terminationGrace" -}}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds }}
{{- include "bridge.minTerminationGrace" . }}
{{- else }}
{{- .Values.terminationGracePeriodSeconds | int }}
{{- end }}
{{- end }}

{{/* Environment of the bridge container (beyond the ConfigMap). */}}
{{- define "bridge.env" -}}
- name: BRIDGE_INSTANCE_ID
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
{{- with .Values.auth.token.existingSecret }}
- name: BRIDGE_TOKEN_FILE
  value: /etc/bridge/token/{{ $.Values.auth.token.key }}
{{- end }}
{{- with .Values.auth.azure }}
{{- if and .clientId (not .workloadIdentity) }}
- name: AZURE_CLIENT_ID
  value: {{ .clientId | quote }}
{{- end }}
{{- if and .tenantId (not .workloadIdentity) }}
- name: AZURE_TENANT_ID
  value: {{ .tenantId | quote }}
{{- end }}
{{- if .clientSecret.existingSecret }}
- name: AZURE_CLIENT_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ .clientSecret.existingSecret }}
      key: {{ .clientSecret.key }}
{{- end }}
{{- end }}
{{- with .Values.nats }}
{{- if .credsSecret.name }}
- name: BRIDGE_NATS_CREDS
  value: /etc/bridge/nats-creds/{{ .credsSecret.key }}
{{- end }}
{{- if .nkeySecret.name }}
- name: BRIDGE_NATS_NKEY
  value: /etc/bridge/nats-nkey/{{ .nkeySecret.key }}
{{- end }}
{{- if .user }}
- name: BRIDGE_NATS_USER
  value: {{ .user | quote }}
{{- end }}
{{- if .passwordSecret.name }}
- name: BRIDGE_NATS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .passwordSecret.name }}
      key: {{ .passwordSecret.key }}
{{- end }}
{{- if .tokenSecret.name }}
- name: BRIDGE_NATS_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ .tokenSecret.name }}
      key: {{ .tokenSecret.key }}
{{- end }}
{{- if .tls.existingSecret }}
{{- if .tls.caKey }}
- name: BRIDGE_NATS_CA
  value: /etc/bridge/nats-tls/{{ .tls.caKey }}
{{- end }}
{{- if .tls.certKey }}
- name: BRIDGE_NATS_CERT
  value: /etc/bridge/nats-tls/{{ .tls.certKey }}
- name: BRIDGE_NATS_KEY
  value: /etc/bridge/nats-tls/{{ .tls.keyKey }}
{{- end }}
{{- end }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Volume mounts of the bridge container: every secret read-only. */}}
{{- define "bridge.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
- name: agents
  mountPath: /etc/bridge/agents
  readOnly: true
{{- if .Values.auth.token.existingSecret }}
- name: token
  mountPath: /etc/bridge/token
  readOnly: true
{{- end }}
{{- if .Values.nats.credsSecret.name }}
- name: nats-creds
  mountPath: /etc/bridge/nats-creds
  readOnly: true
{{- end }}
{{- if .Values.nats.nkeySecret.name }}
- name: nats-nkey
  mountPath: /etc/bridge/nats-nkey
  readOnly: true
{{- end }}
{{- if .Values.nats.tls.existingSecret }}
- name: nats-tls
  mountPath: /etc/bridge/nats-tls
  readOnly: true
{{- end }}
{{- end }}

{{/* Volumes of the pod: secrets by reference, with only the keys used. */}}
{{- define "bridge.volumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: 16Mi
- name: agents
  configMap:
    name: {{ include "bridge.agentsConfigMap" . }}
    items:
      - key: {{ include "bridge.agentsKey" . }}
        path: {{ include "bridge.agentsKey" . }}
{{- with .Values.auth.token }}
{{- if .existingSecret }}
- name: token
  secret:
    secretName: {{ .existingSecret }}
    defaultMode: 0440
    items:
      - key: {{ .key }}
        path: {{ .key }}
{{- end }}
{{- end }}
{{- with .Values.nats }}
{{- if .credsSecret.name }}
- name: nats-creds
  secret:
    secretName: {{ .credsSecret.name }}
    defaultMode: 0440
    items:
      - key: {{ .credsSecret.key }}
        path: {{ .credsSecret.key }}
{{- end }}
{{- if .nkeySecret.name }}
- name: nats-nkey
  secret:
    secretName: {{ .nkeySecret.name }}
    defaultMode: 0440
    items:
      - key: {{ .nkeySecret.key }}
        path: {{ .nkeySecret.key }}
{{- end }}
{{- if .tls.existingSecret }}
- name: nats-tls
  secret:
    secretName: {{ .tls.existingSecret }}
    defaultMode: 0440
    items:
      {{- range $k := compact (list .tls.caKey .tls.certKey .tls.keyKey) }}
      - key: {{ $k }}
        path: {{ $k }}
      {{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* Pod-level settings shared by the Deployment and the test pod. */}}
{{- define "bridge.podCommon" -}}
serviceAccountName: {{ include "bridge.serviceAccountName" . }}
automountServiceAccountToken: {{ .Values.serviceAccount.automountServiceAccountToken }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- end }}

{{/* Labels that Azure workload identity needs on the pods. */}}
{{- define "bridge.workloadIdentityLabels" -}}
{{- if .Values.auth.azure.workloadIdentity -}}
azure.workload.identity/use: "true"
{{- end }}
{{- end }}
