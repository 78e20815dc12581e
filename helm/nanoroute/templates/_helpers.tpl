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
vLLM's API key, in a Secret that both pods read: vLLM as VLLM_API_KEY, the gateway as the variable below,
which the rendered config's in-cluster vllm backend names in api_key_env. The Secret is the operator's
(vllm.apiKey.existingSecret) or the chart's own.
*/}}
{{- define "nanoroute.vllm.apiKeyEnv" -}}
NANOROUTE_VLLM_API_KEY
{{- end }}

{{- define "nanoroute.vllm.apiKeySecretName" -}}
{{- if .Values.vllm.apiKey.existingSecret }}
{{- .Values.vllm.apiKey.existingSecret }}
{{- else }}
{{- printf "%s-api-key" (include "nanoroute.vllm.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/*
The key in the chart's own Secret, base64-encoded as the Secret holds it: the one the Secret in the cluster
already has, so that `helm upgrade` keeps it, else a new random one. Renders without a cluster (`helm
template`, Argo CD) find no Secret and make a new key each time. Made once per render and kept in .Values,
so that the Secret and the pods' checksum/vllm-api-key annotations agree.
*/}}
{{- define "nanoroute.vllm.apiKey.generated" -}}
{{- $apiKey := .Values.vllm.apiKey }}
{{- if not (hasKey $apiKey "generated") }}
{{- $stored := lookup "v1" "Secret" .Release.Namespace (include "nanoroute.vllm.apiKeySecretName" .) }}
{{- $_ := set $apiKey "generated" (include "nanoroute.vllm.apiKey.keep" (dict "stored" $stored "key" $apiKey.key)) }}
{{- end }}
{{- $apiKey.generated }}
{{- end }}

{{/*
A stored Secret's key (base64), or a new random one: 48 letters and digits, about 285 bits.
*/}}
{{- define "nanoroute.vllm.apiKey.keep" -}}
{{- $data := get .stored "data" | default dict }}
{{- get $data .key | default (randAlphaNum 48 | b64enc) }}
{{- end }}

{{/*
How a config backend reaches the chart's vLLM: "all" when it is a vllm backend whose every URL is the
in-cluster Service's, "some" when only some are, empty otherwise. Takes (dict "backend" B "root" $).
*/}}
{{- define "nanoroute.vllm.reach" -}}
{{- $backend := .backend }}
{{- if and (kindIs "map" $backend) (eq (toString (get $backend "type")) "vllm") }}
{{- $url := include "nanoroute.vllm.url" .root }}
{{- $urls := get $backend "urls" | default list }}
{{- $ours := 0 }}
{{- range $urls }}
{{- if eq (tpl (toString .) $.root | trimSuffix "/") $url }}{{ $ours = add1 $ours }}{{ end }}
{{- end }}
{{- if and $ours (eq $ours (len $urls)) }}all{{ else if $ours }}some{{ end }}
{{- end }}
{{- end }}

{{/*
The bundled Redis (redis.bundled.enabled): names, labels, and the URL the gateway reaches it at. With a
password, the URL names $(REDIS_PASSWORD), which Kubernetes expands from the gateway's environment.
*/}}
{{- define "nanoroute.redis.fullname" -}}
{{- printf "%s-redis" (include "nanoroute.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "nanoroute.redis.selectorLabels" -}}
app.kubernetes.io/name: {{ include "nanoroute.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: redis
{{- end }}

{{- define "nanoroute.redis.labels" -}}
{{ include "nanoroute.commonLabels" . }}
app.kubernetes.io/component: redis
{{- end }}

{{- define "nanoroute.redis.port" -}}
6379
{{- end }}

{{- define "nanoroute.redis.url" -}}
{{- $auth := ternary ":$(REDIS_PASSWORD)@" "" (ne .Values.redis.bundled.auth.existingSecret "") }}
{{- printf "redis://%s%s:%s/0" $auth (include "nanoroute.redis.fullname" .) (include "nanoroute.redis.port" .) }}
{{- end }}

{{/*
Whether the gateway has a Redis (the operator's or the bundled one): "true" or empty.
*/}}
{{- define "nanoroute.redis.enabled" -}}
{{- if or .Values.redis.url .Values.redis.existingSecret .Values.redis.bundled.enabled }}true{{ end }}
{{- end }}

{{/*
The gateway config as rendered into the ConfigMap. String values go through `tpl`, so they may use the
helpers above (the vLLM URL above all).
*/}}
{{- define "nanoroute.config" -}}
{{- $config := .Values.config }}
{{- if and (include "nanoroute.adapters.enabled" .) (not (hasKey $config "adapters_dir")) }}
{{- $config = merge (dict "adapters_dir" (include "nanoroute.adapters.dir" .)) $config }}
{{- end }}
{{- if .Values.vllm.enabled }}
{{- /* The chart's vLLM requires its API key: a backend that reaches it and names no key sends the chart's. */}}
{{- $backends := dict }}
{{- range $name, $backend := get $config "backends" }}
{{- if and (eq (include "nanoroute.vllm.reach" (dict "backend" $backend "root" $)) "all") (not (or (get $backend "api_key_env") (get $backend "api_key_file"))) }}
{{- $backend = set (deepCopy $backend) "api_key_env" (include "nanoroute.vllm.apiKeyEnv" $) }}
{{- end }}
{{- $_ := set $backends $name $backend }}
{{- end }}
{{- $config = set (deepCopy $config) "backends" $backends }}
{{- end }}
{{- tpl (toYaml $config) . }}
{{- end }}

{{/*
LoRA adapter manifests for the config's `adapter:` models: the chart's ConfigMap (from adapterManifests) or
the operator's (existingAdapterManifestsConfigMap), mounted in a folder of its own beside the config's
(a ConfigMap volume is a flat folder, and /etc/nanoroute is the config's). The rendered config's
adapters_dir names it relative to the config file's folder (/etc/nanoroute): the two folders then load as
they are wherever they are laid out side by side, in the pod or under `nanoroute check`.
*/}}
{{- define "nanoroute.adapters.enabled" -}}
{{- if or .Values.adapterManifests .Values.existingAdapterManifestsConfigMap }}true{{ end }}
{{- end }}

{{- define "nanoroute.adapters.configMapName" -}}
{{- if .Values.existingAdapterManifestsConfigMap }}
{{- .Values.existingAdapterManifestsConfigMap }}
{{- else }}
{{- printf "%s-adapters" (include "nanoroute.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/*
The data volume is shared (a claim or another volume source, not the default empty dir): each pod then
writes in a folder of its own, named after the pod.
*/}}
{{- define "nanoroute.data.shared" -}}
{{- if or .Values.data.existingClaim .Values.data.volume }}true{{ end }}
{{- end }}

{{/*
Where auth.keysSecret is mounted: the config's `keys:` entries name files in it (secret_file:).
*/}}
{{- define "nanoroute.keys.mountPath" -}}
/etc/nanoroute/keys
{{- end }}

{{- define "nanoroute.adapters.mountPath" -}}
/etc/nanoroute-adapters
{{- end }}

{{- define "nanoroute.adapters.dir" -}}
../nanoroute-adapters
{{- end }}

{{/*
Adapters that the config's models name but that adapterManifests has no manifest for, as "ADAPTER (model
MODEL)"; empty when the chart cannot know (the config or the manifests live in the operator's ConfigMaps,
or the config sets adapters_dir itself).
*/}}
{{- define "nanoroute.missingAdapterManifests" -}}
{{- if not (or .Values.existingConfigMap .Values.existingAdapterManifestsConfigMap (hasKey .Values.config "adapters_dir")) }}
{{- $missing := list }}
{{- range $name, $model := .Values.config.models }}
{{- if and (kindIs "map" $model) $model.adapter (not (hasKey $.Values.adapterManifests (toString $model.adapter))) }}
{{- $missing = append $missing (printf "%s (model %s)" $model.adapter $name) }}
{{- end }}
{{- end }}
{{- $missing | join ", " }}
{{- end }}
{{- end }}

{{/*
adapterManifests whose `path` is outside vLLM's adapters volume, when the chart runs vLLM: vLLM loads an
adapter from the manifest's path as its own pods see it.
*/}}
{{- define "nanoroute.adaptersOutsideVllmVolume" -}}
{{- if .Values.vllm.enabled }}
{{- $prefix := printf "%s/" (trimSuffix "/" .Values.vllm.adapters.mountPath) }}
{{- $outside := list }}
{{- range $name, $manifest := .Values.adapterManifests }}
{{- if and $manifest.path (not (hasPrefix $prefix (toString $manifest.path))) }}
{{- $outside = append $outside (printf "%s (%s)" $name $manifest.path) }}
{{- end }}
{{- end }}
{{- $outside | join ", " }}
{{- end }}
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
{{- if not .Values.metrics.port }}
{{- if not .Values.metrics.onApiPort }}
{{- fail "metrics.port null leaves /metrics on the API port only: set metrics.onApiPort: true with it" }}
{{- end }}
{{- else if eq (int .Values.metrics.port) 8080 }}
{{- fail "metrics.port must differ from the API port, 8080" }}
{{- end }}
{{- if and .Values.vllm.enabled .Values.vllm.lora.modules (not .Values.vllm.lora.enabled) }}
{{- fail "vllm.lora.modules needs vllm.lora.enabled" }}
{{- end }}
{{- if and .Values.redis.bundled.enabled (or .Values.redis.url .Values.redis.existingSecret) }}
{{- fail "redis.bundled.enabled runs a Redis for the gateway, and redis.url or redis.existingSecret names another: give one, not both" }}
{{- end }}
{{- if and .Values.adapterManifests .Values.existingAdapterManifestsConfigMap }}
{{- fail "give adapterManifests or existingAdapterManifestsConfigMap, not both" }}
{{- end }}
{{- range $name, $manifest := .Values.adapterManifests }}
{{- if and (hasKey $manifest "name") (ne (toString $manifest.name) $name) }}
{{- fail (printf "adapterManifests.%s: name %q differs from its key; leave it out, the key is the name" $name (toString $manifest.name)) }}
{{- end }}
{{- end }}
{{- with include "nanoroute.missingAdapterManifests" . }}
{{- fail (printf "the config's models name adapters that adapterManifests has no manifest for: %s; the gateway would fail to load the config" .) }}
{{- end }}
{{- /* The gateway pod's own volumes (deployment.yaml), whether or not these values add each one. */}}
{{- $ownVolumes := list "config" "keys" "adapters" "data" "tmp" }}
{{- $extraVolumes := list }}
{{- range .Values.extraVolumes }}
{{- if has .name $ownVolumes }}
{{- fail (printf "extraVolumes: %q is the name of one of the chart's own volumes (%s): give yours another name" .name (join ", " $ownVolumes)) }}
{{- end }}
{{- if has .name $extraVolumes }}
{{- fail (printf "extraVolumes: %q is given twice: a pod's volume names must be unique" .name) }}
{{- end }}
{{- $extraVolumes = append $extraVolumes .name }}
{{- end }}
{{- if .Values.vllm.enabled }}
{{- range $name, $backend := .Values.config.backends }}
{{- if and (eq (include "nanoroute.vllm.reach" (dict "backend" $backend "root" $)) "some") (not (or (get $backend "api_key_env") (get $backend "api_key_file"))) }}
{{- fail (printf "config.backends.%s mixes the in-cluster vLLM (%s) with other URLs: the in-cluster vLLM requires its API key (vllm.apiKey), which the chart will not send to the others; give it a backend of its own" $name (include "nanoroute.vllm.url" $)) }}
{{- end }}
{{- end }}
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
{{- if .Values.vllm.enabled }}{{ $set = append $set (include "nanoroute.vllm.apiKeyEnv" .) }}{{ end }}
{{- $missing := list }}
{{- range $name, $backend := .Values.config.backends }}
{{- if and (kindIs "map" $backend) $backend.api_key_env (not (has $backend.api_key_env $set)) }}
{{- $missing = append $missing $backend.api_key_env }}
{{- end }}
{{- end }}
{{- $missing | uniq | join ", " }}
{{- end }}
{{- end }}
