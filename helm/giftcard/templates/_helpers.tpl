{{/*
Names and labels.
*/}}
{{- define "giftcard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "giftcard.fullname" -}}
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

{{/* The services of the mesh, in the order `giftcard serve <name>` knows them. */}}
{{- define "giftcard.serviceNames" -}}
balance authorization fulfillment settlement refund gateway
{{- end }}

{{/* Resource name of one component: <fullname>-<component>; the all-in-one workload is <fullname>. */}}
{{- define "giftcard.componentName" -}}
{{- if eq .component "all" }}
{{- include "giftcard.fullname" .root }}
{{- else }}
{{- printf "%s-%s" (include "giftcard.fullname" .root | trunc 50 | trimSuffix "-") .component }}
{{- end }}
{{- end }}

{{- define "giftcard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "giftcard.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "giftcard.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "giftcard.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: giftcard
{{- end }}

{{/* Labels for objects that belong to no one component (ConfigMap, Secrets). */}}
{{- define "giftcard.sharedLabels" -}}
{{ include "giftcard.labels" (dict "root" . "component" "shared") }}
{{- end }}

{{/*
LabelSelector matching every mesh pod of this release (the services or the all-in-one pod),
and nothing else: not the bundled Redis, not another release in the namespace.
*/}}
{{- define "giftcard.meshPodSelector" -}}
matchLabels:
  app.kubernetes.io/name: {{ include "giftcard.name" . }}
  app.kubernetes.io/instance: {{ .Release.Name }}
matchExpressions:
  - key: app.kubernetes.io/component
    operator: In
    values:
      {{- if eq .Values.mode "all-in-one" }}
      - all
      {{- else }}
      {{- range splitList " " (include "giftcard.serviceNames" .) }}
      - {{ . }}
      {{- end }}
      {{- end }}
{{- end }}

{{- define "giftcard.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/*
Deep merge of .src into the dict .dst (mutates .dst). Unlike sprig's merge/mergeOverwrite it
lets an override set false, 0 or "" (mergo treats those as "unset").
*/}}
{{- define "giftcard.mergeInto" -}}
{{- $dst := .dst }}
{{- range $key, $value := .src }}
{{- if and (kindIs "map" $value) (kindIs "map" (get $dst $key)) }}
{{- include "giftcard.mergeInto" (dict "dst" (get $dst $key) "src" $value) }}
{{- else }}
{{- $_ := set $dst $key $value }}
{{- end }}
{{- end }}
{{- end }}

{{/* serviceDefaults with services.<component> (or allInOne) merged over it, as YAML. */}}
{{- define "giftcard.componentValues" -}}
{{- $values := deepCopy .root.Values.serviceDefaults }}
{{- $own := dict }}
{{- if eq .component "all" }}
{{- $own = .root.Values.allInOne | default dict }}
{{- else }}
{{- $own = get .root.Values.services .component | default dict }}
{{- end }}
{{- include "giftcard.mergeInto" (dict "dst" $values "src" (deepCopy $own)) }}
{{- toYaml $values }}
{{- end }}

{{/*
Timing of a graceful stop: preStop sleep, then the server's drain, plus headroom.
*/}}
{{- define "giftcard.terminationGracePeriodSeconds" -}}
{{- $s := .Values.shutdown }}
{{- add $s.preStopSleepSeconds $s.drainGraceSeconds $s.headroomSeconds }}
{{- end }}

{{/*
Redis: URL, port (for NetworkPolicy), and the Secret holding the password ("" = none).
*/}}
{{- define "giftcard.redisUrl" -}}
{{- if .Values.redis.bundled.enabled }}
{{- printf "redis://%s:6379/0" (include "giftcard.componentName" (dict "root" . "component" "redis")) }}
{{- else }}
{{- .Values.redis.url }}
{{- end }}
{{- end }}

{{- define "giftcard.redisPort" -}}
{{- if .Values.redis.bundled.enabled }}6379{{- else }}
{{- (regexFind ":[0-9]+$" (urlParse .Values.redis.url).host | trimPrefix ":") | default "6379" }}
{{- end }}
{{- end }}

{{- define "giftcard.redisSecretName" -}}
{{- if .Values.redis.auth.existingSecret }}
{{- .Values.redis.auth.existingSecret }}
{{- else if or .Values.redis.auth.password .Values.redis.bundled.enabled }}
{{- include "giftcard.componentName" (dict "root" . "component" "redis-auth") }}
{{- end }}
{{- end }}

{{- define "giftcard.redisSecretKey" -}}
{{- if .Values.redis.auth.existingSecret }}{{ .Values.redis.auth.existingSecretPasswordKey }}{{ else }}redis-password{{ end }}
{{- end }}

{{- define "giftcard.merchantsSecretName" -}}
{{- .Values.merchants.existingSecret | default (include "giftcard.componentName" (dict "root" . "component" "merchants")) }}
{{- end }}

{{- define "giftcard.merchantsSecretKey" -}}
{{- if .Values.merchants.existingSecret }}{{ .Values.merchants.existingSecretKey }}{{ else }}merchants.yaml{{ end }}
{{- end }}

{{- define "giftcard.vendorsSecretName" -}}
{{- .Values.vendors.existingSecret | default (include "giftcard.componentName" (dict "root" . "component" "vendors")) }}
{{- end }}

{{- define "giftcard.cardHashSecretName" -}}
{{- .Values.security.cardHashKey.existingSecret | default (include "giftcard.componentName" (dict "root" . "component" "card-hash-key")) }}
{{- end }}

{{- define "giftcard.cardHashSecretKey" -}}
{{- if .Values.security.cardHashKey.existingSecret }}{{ .Values.security.cardHashKey.existingSecretKey }}{{ else }}card-hash-key{{ end }}
{{- end }}

{{- define "giftcard.internalTokenSecretName" -}}
{{- .Values.security.internalToken.existingSecret | default (include "giftcard.componentName" (dict "root" . "component" "internal-token")) }}
{{- end }}

{{- define "giftcard.internalTokenSecretKey" -}}
{{- if .Values.security.internalToken.existingSecret }}{{ .Values.security.internalToken.existingSecretKey }}{{ else }}internal-token{{ end }}
{{- end }}

{{/*
A base64 random secret value that survives upgrades: reuse the one in the live Secret when
there is one (lookup is empty under `helm template` and --dry-run, so those get a fresh value).
*/}}
{{- define "giftcard.keptRandom" -}}
{{- $live := lookup "v1" "Secret" .root.Release.Namespace .name }}
{{- if and $live $live.data (hasKey $live.data .key) }}
{{- index $live.data .key }}
{{- else }}
{{- randAlphaNum 48 | b64enc }}
{{- end }}
{{- end }}

{{/* OTLP endpoint port (for NetworkPolicy); 4317 (OTLP/gRPC) when the URL has none. */}}
{{- define "giftcard.otlpPort" -}}
{{- (regexFind ":[0-9]+$" (urlParse .Values.telemetry.otlpEndpoint).host | trimPrefix ":") | default "4317" }}
{{- end }}

{{/*
Checks the JSON schema cannot express; each fails the render with the value path to fix.
*/}}
{{- define "giftcard.validate" -}}
{{- if and (not .Values.redis.bundled.enabled) (not .Values.redis.url) }}
{{- fail "redis.url is required (a redis:// or rediss:// URL) unless redis.bundled.enabled is true" }}
{{- end }}
{{- if and .Values.merchants.existingSecret .Values.merchants.entries }}
{{- fail "set either merchants.existingSecret or merchants.entries, not both" }}
{{- end }}
{{- if and .Values.vendors.existingSecret .Values.vendors.credentials }}
{{- fail "set either vendors.existingSecret or vendors.credentials, not both" }}
{{- end }}
{{- if and .Values.security.cardHashKey.existingSecret .Values.security.cardHashKey.value }}
{{- fail "set either security.cardHashKey.existingSecret or security.cardHashKey.value, not both" }}
{{- end }}
{{- if and .Values.security.internalToken.existingSecret .Values.security.internalToken.value }}
{{- fail "set either security.internalToken.existingSecret or security.internalToken.value, not both" }}
{{- end }}
{{- if and .Values.redis.auth.existingSecret .Values.redis.auth.password }}
{{- fail "set either redis.auth.existingSecret or redis.auth.password, not both" }}
{{- end }}
{{- $components := list "all" }}
{{- if eq .Values.mode "microservices" }}
{{- $components = splitList " " (include "giftcard.serviceNames" .) }}
{{- end }}
{{- range $components }}
{{- $v := include "giftcard.componentValues" (dict "root" $ "component" .) | fromYaml }}
{{- $where := ternary "allInOne" (printf "services.%s" .) (eq . "all") }}
{{- if and $v.autoscaling.enabled (gt (int $v.autoscaling.minReplicas) (int $v.autoscaling.maxReplicas)) }}
{{- fail (printf "%s.autoscaling: minReplicas (%v) is greater than maxReplicas (%v)" $where $v.autoscaling.minReplicas $v.autoscaling.maxReplicas) }}
{{- end }}
{{- end }}
{{- end }}
