{{/* Names and labels. */}}
{{- define "crdt-state.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "crdt-state.fullname" -}}
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

{{- define "crdt-state.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "crdt-state.instanceLabels" -}}
app.kubernetes.io/name: {{ include "crdt-state.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The server's pods; the migration Job's pods (component "migrate") are not among them. */}}
{{- define "crdt-state.selectorLabels" -}}
{{ include "crdt-state.instanceLabels" . }}
app.kubernetes.io/component: server
{{- end }}

{{- define "crdt-state.commonLabels" -}}
helm.sh/chart: {{ include "crdt-state.chart" . }}
{{ include "crdt-state.instanceLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: crdt-state
{{- end }}

{{- define "crdt-state.labels" -}}
{{ include "crdt-state.commonLabels" . }}
app.kubernetes.io/component: server
{{- end }}

{{- define "crdt-state.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "crdt-state.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "crdt-state.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* What is configured: "true" or "". */}}
{{- define "crdt-state.hasDatabase" -}}
{{- if or .Values.database.url .Values.database.existingSecret }}true{{ end }}
{{- end }}

{{- define "crdt-state.hasRedis" -}}
{{- if or .Values.redis.url .Values.redis.existingSecret .Values.redis.host }}true{{ end }}
{{- end }}

{{/* The chart generates an HS256 secret when no way to check tokens is given. */}}
{{- define "crdt-state.generatesJwtSecret" -}}
{{- if not (or .Values.auth.jwtSecretKey .Values.auth.existingSecret .Values.auth.jwksUrl .Values.auth.jwks) }}true{{ end }}
{{- end }}

{{/* The keys of the chart's Secret (a dict; empty: no Secret). */}}
{{- define "crdt-state.secretData" -}}
{{- $data := dict }}
{{- if and .Values.database.url (not .Values.database.existingSecret) }}
{{- $_ := set $data "DATABASE_URL" .Values.database.url }}
{{- end }}
{{- if and .Values.redis.url (not .Values.redis.existingSecret) }}
{{- $_ := set $data "REDIS_URL" .Values.redis.url }}
{{- end }}
{{- if and .Values.git.pushUrl (not .Values.git.existingSecret) }}
{{- $_ := set $data "CRDT_STATE_GIT_PUSH_URL" .Values.git.pushUrl }}
{{- end }}
{{- if and .Values.auth.jwtSecretKey (not .Values.auth.existingSecret) }}
{{- $_ := set $data "JWT_SECRET_KEY" .Values.auth.jwtSecretKey }}
{{- else if include "crdt-state.generatesJwtSecret" . }}
{{- $previous := lookup "v1" "Secret" .Release.Namespace (include "crdt-state.fullname" .) }}
{{- if and $previous $previous.data (hasKey $previous.data "JWT_SECRET_KEY") }}
{{- $_ := set $data "JWT_SECRET_KEY" (index $previous.data "JWT_SECRET_KEY" | b64dec) }}
{{- else }}
{{- $_ := set $data "JWT_SECRET_KEY" (randAlphaNum 48) }}
{{- end }}
{{- end }}
{{- toYaml $data }}
{{- end }}

{{/* The ConfigMap's environment (a dict of strings). */}}
{{- define "crdt-state.configData" -}}
{{- $env := dict "CRDT_STATE_DATA_DIR" "/data" "GIT_WORKSPACE_ROOT" "/data/git" }}
{{- $_ := set $env "CRDT_STATE_SNAPSHOT_INTERVAL_SECONDS" (toString .Values.git.snapshotIntervalSeconds) }}
{{- $_ := set $env "CRDT_STATE_DRAIN_SECONDS" (toString .Values.shutdown.drainSeconds) }}
{{- $_ := set $env "CRDT_STATE_SHUTDOWN_SECONDS" (toString .Values.shutdown.requestsSeconds) }}
{{- if and .Values.redis.host (not (or .Values.redis.url .Values.redis.existingSecret)) }}
{{- $_ := set $env "REDIS_URL" (printf "redis://%s:%v/%v" .Values.redis.host .Values.redis.port .Values.redis.db) }}
{{- end }}
{{- if .Values.allowedOrigins }}
{{- $_ := set $env "CRDT_STATE_ALLOWED_ORIGINS" (join "," .Values.allowedOrigins) }}
{{- end }}
{{- with .Values.auth }}
{{- if .jwksUrl }}
{{- $_ := set $env "CRDT_STATE_JWKS_URL" .jwksUrl }}
{{- end }}
{{- if .jwks }}
{{- $_ := set $env "CRDT_STATE_JWKS_FILE" "/etc/crdt-state/jwks/jwks.json" }}
{{- end }}
{{- if .issuer }}
{{- $_ := set $env "CRDT_STATE_JWT_ISSUER" (join "," .issuer) }}
{{- end }}
{{- if .audience }}
{{- $_ := set $env "CRDT_STATE_JWT_AUDIENCE" (join "," .audience) }}
{{- end }}
{{- if .algorithms }}
{{- $_ := set $env "CRDT_STATE_JWT_ALGORITHMS" (join "," .algorithms) }}
{{- end }}
{{- $_ := set $env "CRDT_STATE_JWT_LEEWAY_SECONDS" (toString .leewaySeconds) }}
{{- $_ := set $env "CRDT_STATE_MAX_TOKEN_LIFETIME_SECONDS" (toString .maxTokenLifetimeSeconds) }}
{{- end }}
{{- if .Values.git.sshSecret }}
{{- $_ := set $env "GIT_SSH_COMMAND" "ssh -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile=/etc/crdt-state/ssh/known_hosts -i /etc/crdt-state/ssh/ssh-privatekey" }}
{{- end }}
{{- range $name, $value := .Values.env }}
{{- $_ := set $env $name (toString $value) }}
{{- end }}
{{- toYaml $env }}
{{- end }}

{{/* A secretKeyRef env entry: name, secret, key. */}}
{{- define "crdt-state.secretEnv" -}}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ .secret }}
      key: {{ .key }}
{{- end }}

{{/* Every env entry that comes from a Secret (the chart's or an existing one). */}}
{{- define "crdt-state.secretEnvs" -}}
{{- $own := include "crdt-state.fullname" . }}
{{- $data := include "crdt-state.secretData" . | fromYaml }}
{{- if .Values.database.existingSecret }}
{{ include "crdt-state.secretEnv" (dict "name" "DATABASE_URL" "secret" .Values.database.existingSecret "key" .Values.database.existingSecretKey) }}
{{- else if hasKey $data "DATABASE_URL" }}
{{ include "crdt-state.secretEnv" (dict "name" "DATABASE_URL" "secret" $own "key" "DATABASE_URL") }}
{{- end }}
{{- if .Values.redis.existingSecret }}
{{ include "crdt-state.secretEnv" (dict "name" "REDIS_URL" "secret" .Values.redis.existingSecret "key" .Values.redis.existingSecretKey) }}
{{- else if hasKey $data "REDIS_URL" }}
{{ include "crdt-state.secretEnv" (dict "name" "REDIS_URL" "secret" $own "key" "REDIS_URL") }}
{{- end }}
{{- if .Values.auth.existingSecret }}
{{ include "crdt-state.secretEnv" (dict "name" "JWT_SECRET_KEY" "secret" .Values.auth.existingSecret "key" .Values.auth.existingSecretKey) }}
{{- else if hasKey $data "JWT_SECRET_KEY" }}
{{ include "crdt-state.secretEnv" (dict "name" "JWT_SECRET_KEY" "secret" $own "key" "JWT_SECRET_KEY") }}
{{- end }}
{{- if .Values.git.existingSecret }}
{{ include "crdt-state.secretEnv" (dict "name" "CRDT_STATE_GIT_PUSH_URL" "secret" .Values.git.existingSecret "key" .Values.git.existingSecretKey) }}
{{- else if hasKey $data "CRDT_STATE_GIT_PUSH_URL" }}
{{ include "crdt-state.secretEnv" (dict "name" "CRDT_STATE_GIT_PUSH_URL" "secret" $own "key" "CRDT_STATE_GIT_PUSH_URL") }}
{{- end }}
{{- end }}

{{/* Replicas the release may run at once (the HPA's maximum when it scales). */}}
{{- define "crdt-state.maxReplicas" -}}
{{- if .Values.autoscaling.enabled }}{{ .Values.autoscaling.maxReplicas }}{{ else }}{{ .Values.replicaCount }}{{ end }}
{{- end }}

{{/* Settings that cannot work together: fail with a sentence that says what to change. */}}
{{- define "crdt-state.validate" -}}
{{- $several := or (gt (int (include "crdt-state.maxReplicas" .)) 1) .Values.autoscaling.enabled }}
{{- if and $several (not (include "crdt-state.hasDatabase" .)) }}
{{- fail "Several replicas (replicaCount > 1 or autoscaling) share one log: set database.url or database.existingSecret (PostgreSQL). The embedded SQLite store runs one replica." }}
{{- end }}
{{- if and (or $several (gt (int .Values.workers) 1)) (not (include "crdt-state.hasRedis" .)) }}
{{- fail "Several replicas (replicaCount > 1, autoscaling or workers > 1) hear each other's changes through Redis: set redis.url, redis.existingSecret or redis.host." }}
{{- end }}
{{- if and $several .Values.persistence.enabled (not .Values.persistence.existingClaim) (not (has "ReadWriteMany" .Values.persistence.accessModes)) }}
{{- fail "Several replicas share the Git snapshot folder (/data): give persistence.accessModes ReadWriteMany (or an existingClaim that is), or set persistence.enabled=false (snapshots then live and die with each pod; see README)." }}
{{- end }}
{{- $stop := add (int .Values.preStopSleepSeconds) (ceil .Values.shutdown.drainSeconds | int) (ceil .Values.shutdown.requestsSeconds | int) 5 }}
{{- if lt (int .Values.terminationGracePeriodSeconds) $stop }}
{{- fail (printf "terminationGracePeriodSeconds must be at least preStopSleepSeconds + shutdown.drainSeconds + shutdown.requestsSeconds + 5 (%d): after the pause the server drains its clients, finishes requests, then commits what is pending." $stop) }}
{{- end }}
{{- if and .Values.autoscaling.enabled (lt (int .Values.autoscaling.maxReplicas) (int .Values.autoscaling.minReplicas)) }}
{{- fail "autoscaling.maxReplicas must be at least autoscaling.minReplicas." }}
{{- end }}
{{- end }}
