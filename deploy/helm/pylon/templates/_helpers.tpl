{{/* Names and labels. */}}
{{- define "pylon.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "pylon.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "pylon.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "pylon.labels" -}}
helm.sh/chart: {{ include "pylon.chart" . }}
app.kubernetes.io/name: {{ include "pylon.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: pylon
pylon.io/region: {{ .Values.region | quote }}
{{- end -}}

{{/* The Pylon pods (component "sfu"). */}}
{{- define "pylon.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pylon.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: sfu
{{- end -}}

{{/* The in-chart Redis pods. */}}
{{- define "pylon.redis.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pylon.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: redis
{{- end -}}

{{- define "pylon.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "pylon.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "pylon.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "pylon.redis.image" -}}
{{- $i := .Values.redis.internal.image -}}
{{- if $i.digest -}}
{{- printf "%s@%s" $i.repository $i.digest -}}
{{- else -}}
{{- printf "%s:%s" $i.repository $i.tag -}}
{{- end -}}
{{- end -}}

{{- define "pylon.redis.fullname" -}}
{{- printf "%s-redis" (include "pylon.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "pylon.redis.headless" -}}
{{- printf "%s-redis-headless" (include "pylon.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* DNS suffix of the in-chart Redis pods: <headless>.<namespace>.svc.<domain> */}}
{{- define "pylon.redis.domain" -}}
{{- printf "%s.%s.svc.%s" (include "pylon.redis.headless" .) .Release.Namespace .Values.clusterDomain -}}
{{- end -}}

{{/* The relay gateway Service of a region: pylon-relay-<region>. */}}
{{- define "pylon.gatewayName" -}}
{{- $ctx := index . 0 -}}
{{- $region := index . 1 -}}
{{- printf "%s%s" $ctx.Values.relay.gateway.servicePrefix $region | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Peer regions without this release's own region, sorted and de-duplicated. */}}
{{- define "pylon.peerRegions" -}}
{{- $peers := list -}}
{{- range (.Values.relay.peerRegions | default list) -}}
{{- if ne . $.Values.region -}}
{{- $peers = append $peers . -}}
{{- end -}}
{{- end -}}
{{- $peers | uniq | sortAlpha | toJson -}}
{{- end -}}

{{/* Validation of values the schema cannot express. Included by the StatefulSet. */}}
{{- define "pylon.validate" -}}
{{- if not (regexMatch "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$" .Values.region) -}}
{{- fail (printf "region %q: use lower-case letters, digits and '-' (it names the relay gateway Service)" .Values.region) -}}
{{- end -}}
{{- if not .Values.keys.existingSecret -}}
{{- fail "keys.existingSecret: name the Secret holding the API keys (env LIVEKIT_KEYS)" -}}
{{- end -}}
{{- $peers := include "pylon.peerRegions" . | fromJsonArray -}}
{{- if and $peers (not .Values.relay.secretRef.name) -}}
{{- fail "relay.secretRef.name: peer regions need the region secret (env PYLON_RELAY_SECRET)" -}}
{{- end -}}
{{- range $peers -}}
{{- if not (regexMatch "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$" .) -}}
{{- fail (printf "relay.peerRegions: %q is not a valid region name" .) -}}
{{- end -}}
{{- end -}}
{{- if and .Values.rtc.tcp_port (eq (int .Values.rtc.tcp_port) (int .Values.rtc.udp_port)) -}}
{{- fail "rtc.tcp_port: the same number as rtc.udp_port; pick another port, or 0 to turn ICE/TCP off" -}}
{{- end -}}
{{- with .Values.turn -}}
{{- if .enabled -}}
{{- if and (not .udp_port) (not .tls_port) -}}
{{- fail "turn.enabled: set turn.udp_port and/or turn.tls_port" -}}
{{- end -}}
{{- if and .tls_port (not .domain) -}}
{{- fail "turn.domain: TURN/TLS needs the name in its certificate" -}}
{{- end -}}
{{- if and .tls_port (not .external_tls) (not .tlsSecret) -}}
{{- fail "turn.tlsSecret: name the kubernetes.io/tls Secret for TURN/TLS, or set turn.external_tls" -}}
{{- end -}}
{{- if gt (int .relay_range_start) (int .relay_range_end) -}}
{{- fail "turn.relay_range_end is below turn.relay_range_start" -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if gt (len (.Values.bind_addresses | default list)) 1 -}}
{{- fail "bind_addresses: Pylon binds one address" -}}
{{- end -}}
{{- $grace := int .Values.terminationGracePeriodSeconds -}}
{{- range $k := list "migrate_after" "timeout" -}}
{{- $d := index ($.Values.drain | default dict) $k -}}
{{- if and (not (kindIs "invalid" $d)) (ge (int $d) $grace) -}}
{{- fail (printf "drain.%s (%d s) must be shorter than terminationGracePeriodSeconds (%d s), or Kubernetes kills the node mid-drain" $k (int $d) $grace) -}}
{{- end -}}
{{- end -}}
{{- if and .Values.webhook.urls (not .Values.webhook.api_key) -}}
{{- fail "webhook.api_key: name the API key webhooks are signed with" -}}
{{- end -}}
{{- if .Values.redis.internal.enabled -}}
{{- if or .Values.redis.address .Values.redis.sentinel_addresses -}}
{{- fail "redis: set either redis.internal.enabled or an external redis.address / sentinel_addresses, not both" -}}
{{- end -}}
{{- if lt (int .Values.redis.internal.replicas) (int .Values.redis.internal.quorum) -}}
{{- fail "redis.internal.quorum must not exceed redis.internal.replicas" -}}
{{- end -}}
{{- else if not (or .Values.redis.address .Values.redis.sentinel_addresses) -}}
{{- fail "redis: enable redis.internal or set redis.address (or sentinel_master_name + sentinel_addresses): a region needs its Redis directory" -}}
{{- end -}}
{{- end -}}

{{/* The Secret and key of the Redis password, if any, as a dict (name, key). */}}
{{- define "pylon.redisPasswordRef" -}}
{{- if .Values.redis.internal.enabled -}}
{{- if .Values.redis.internal.auth.existingSecret -}}
{{- dict "name" .Values.redis.internal.auth.existingSecret "key" .Values.redis.internal.auth.key | toJson -}}
{{- else -}}
{{- dict | toJson -}}
{{- end -}}
{{- else if .Values.redis.passwordSecretRef.name -}}
{{- dict "name" .Values.redis.passwordSecretRef.name "key" .Values.redis.passwordSecretRef.key | toJson -}}
{{- else -}}
{{- dict | toJson -}}
{{- end -}}
{{- end -}}

{{/* Node labels the host policy selects. */}}
{{- define "pylon.policyNodeSelector" -}}
{{- $sel := .Values.networkPolicy.nodeSelector | default .Values.nodeSelector | default dict -}}
{{- toYaml $sel -}}
{{- end -}}
