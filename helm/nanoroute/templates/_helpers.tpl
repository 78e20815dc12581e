{{/*
Names, labels and small pieces shared by the templates. Each template renders one Kubernetes object.
*/}}

{{- define "nanoroute.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The release's base name: <release>-nanoroute, or the release name alone when it already contains the chart's.
*/}}
{{- define "nanoroute.fullname" -}}
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

{{- define "nanoroute.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels on every object; the selector labels of each component are added to them.
*/}}
{{- define "nanoroute.commonLabels" -}}
helm.sh/chart: {{ include "nanoroute.chart" . }}
app.kubernetes.io/name: {{ include "nanoroute.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: nanoroute
{{- end }}

{{- define "nanoroute.selectorLabels" -}}
app.kubernetes.io/name: {{ include "nanoroute.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: gateway
{{- end }}

{{- define "nanoroute.labels" -}}
{{ include "nanoroute.commonLabels" . }}
app.kubernetes.io/component: gateway
{{- end }}

{{/*
The gateway's ConfigMap: the chart's own, or the operator's existing one.
*/}}
{{- define "nanoroute.configMapName" -}}
{{- if .Values.existingConfigMap }}
{{- .Values.existingConfigMap }}
{{- else }}
{{- printf "%s-config" (include "nanoroute.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "nanoroute.configKey" -}}
{{- if .Values.existingConfigMap }}{{ .Values.existingConfigMapKey }}{{ else }}config.yaml{{ end }}
{{- end }}

{{- define "nanoroute.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "nanoroute.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "nanoroute.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/*
vLLM: names, labels, and the in-cluster URL that the gateway config's vllm backend should use:
  backends: {local: {type: vllm, urls: ['{{ include "nanoroute.vllm.url" . }}']}}
*/}}
{{- define "nanoroute.vllm.fullname" -}}
{{- printf "%s-vllm" (include "nanoroute.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "nanoroute.vllm.selectorLabels" -}}
app.kubernetes.io/name: {{ include "nanoroute.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: vllm
{{- end }}

{{- define "nanoroute.vllm.labels" -}}
{{ include "nanoroute.commonLabels" . }}
app.kubernetes.io/component: vllm
{{- end }}

{{- define "nanoroute.vllm.url" -}}
{{- printf "http://%s:%v/v1" (include "nanoroute.vllm.fullname" .) .Values.vllm.service.port }}
{{- end }}

{{/*
The gateway config as rendered into the ConfigMap. String values go through `tpl`, so they may use the
helpers above (the vLLM URL above all).
*/}}
{{- define "nanoroute.config" -}}
{{- tpl (toYaml .Values.config) . }}
{{- end }}

{{/*
The Grafana dashboard shipped with the chart; empty when the file is not there.
*/}}
{{- define "nanoroute.dashboard" -}}
{{- .Files.Get "dashboards/nanoroute.json" }}
{{- end }}

{{/*
Checks across values that values.schema.json cannot express; a failure stops the install with the reason.
*/}}
{{- define "nanoroute.validate" -}}
{{- if .Values.hpa.enabled }}
{{- if not (or .Values.hpa.targetCPUUtilizationPercentage .Values.hpa.targetMemoryUtilizationPercentage) }}
{{- fail "hpa.enabled needs hpa.targetCPUUtilizationPercentage or hpa.targetMemoryUtilizationPercentage" }}
{{- end }}
{{- if lt (int .Values.hpa.maxReplicas) (int .Values.hpa.minReplicas) }}
{{- fail "hpa.maxReplicas must be at least hpa.minReplicas" }}
{{- end }}
{{- end }}
{{- if .Values.pdb.enabled }}
{{- if and (kindIs "invalid" .Values.pdb.minAvailable) (kindIs "invalid" .Values.pdb.maxUnavailable) }}
{{- fail "pdb.enabled needs pdb.maxUnavailable or pdb.minAvailable" }}
{{- end }}
{{- end }}
{{- if and .Values.vllm.enabled .Values.vllm.lora.modules (not .Values.vllm.lora.enabled) }}
{{- fail "vllm.lora.modules needs vllm.lora.enabled" }}
{{- end }}
{{- end }}

{{/*
Provider keys that the config names in api_key_env but that no providerKeys or extraEnv entry sets; empty
when an envFrom source may set them.
*/}}
{{- define "nanoroute.missingProviderKeys" -}}
{{- if not (or .Values.existingConfigMap .Values.existingSecret .Values.extraEnvFrom) }}
{{- $set := list }}
{{- range .Values.providerKeys }}{{ $set = append $set .env }}{{ end }}
{{- range .Values.extraEnv }}{{ $set = append $set .name }}{{ end }}
{{- $missing := list }}
{{- range $name, $backend := .Values.config.backends }}
{{- if and (kindIs "map" $backend) $backend.api_key_env (not (has $backend.api_key_env $set)) }}
{{- $missing = append $missing $backend.api_key_env }}
{{- end }}
{{- end }}
{{- $missing | uniq | join ", " }}
{{- end }}
{{- end }}
