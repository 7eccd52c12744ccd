{{/* The name of every resource: the model's Kubernetes name, or fullnameOverride. */}}
{{- define "modelport.name" -}}
{{- default .Values.model.resourceName .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- end -}}

{{- define "modelport.selectorLabels" -}}
app.kubernetes.io/name: {{ include "modelport.name" . }}
app.kubernetes.io/instance: {{ include "modelport.name" . }}
{{- end -}}

{{- define "modelport.labels" -}}
{{ include "modelport.selectorLabels" . }}
app.kubernetes.io/component: model
app.kubernetes.io/part-of: modelport
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | quote }}
modelport.io/model: {{ include "modelport.name" . }}
{{- end -}}

{{/* What a pod of one track serves: (dict "root" $ "track" "stable" "model" .Values.model) */}}
{{- define "modelport.trackLabels" -}}
{{ include "modelport.labels" .root }}
app.kubernetes.io/version: {{ .model.version | quote }}
modelport.io/version: {{ .model.version | quote }}
modelport.io/framework: {{ .root.Values.model.framework | quote }}
modelport.io/track: {{ .track }}
{{- end -}}

{{- define "modelport.trackAnnotations" -}}
modelport.io/model: {{ .root.Values.model.name | quote }}
modelport.io/version: {{ .model.version | quote }}
modelport.io/sha256: {{ .model.sha256 | quote }}
modelport.io/framework: {{ .root.Values.model.framework | quote }}
modelport.io/task: {{ .root.Values.model.task | quote }}
modelport.io/modelport-version: {{ .root.Chart.AppVersion | quote }}
{{- if eq .track "canary" }}
modelport.io/canary-weight: {{ .root.Values.canary.weight | quote }}
{{- end }}
{{- end -}}

{{/* The canary's pods: its weight's share of the pods (a Service splits requests by pod), at least one. */}}
{{- define "modelport.canaryReplicas" -}}
{{- $stable := int (ternary .Values.autoscaling.minReplicas .Values.replicaCount .Values.autoscaling.enabled) -}}
{{- $weight := int .Values.canary.weight -}}
{{- $share := div (add (mul $stable $weight) (div (sub 100 $weight) 2)) (sub 100 $weight) -}}
{{- max 1 $share -}}
{{- end -}}

{{/* The model container: the same for every track, only the image differs. */}}
{{- define "modelport.container" -}}
name: model
image: {{ printf "%s:%s" .image.repository (toString .image.tag) | quote }}
imagePullPolicy: {{ .root.Values.image.pullPolicy }}
{{- $log := .root.Values.gateway.predictionLog }}
{{- if .root.Values.gateway.enabled }}
# Behind the gateway: the server writes the prediction log itself, with the proxy's request and key ids.
args: ["serve", {{ printf "%s:%v" .root.Values.model.name .model.version | quote }}, "--host", "0.0.0.0", "--port", {{ .root.Values.port | quote }},
       "--log-db", "$(MODELPORT_PREDICTIONS_DB_URL)", "--spool-dir", "/var/lib/modelport/spool", "--trust-proxy-headers"]
env:
  - name: MODELPORT_PREDICTIONS_DB_URL
    valueFrom:
      secretKeyRef:
        name: {{ $log.urlSecret.name }}
        key: {{ $log.urlSecret.key }}
  {{- if $log.passwordSecret.name }}
  - name: MODELPORT_PREDICTIONS_DB_PASSWORD_FILE
    value: /run/secrets/db_password
  {{- end }}
{{- end }}
ports:
  - name: http
    containerPort: {{ .root.Values.port }}
    protocol: TCP
resources:
  {{- toYaml .root.Values.resources | nindent 2 }}
startupProbe:
  httpGet:
    path: {{ .root.Values.probes.readyPath }}
    port: http
  periodSeconds: 2
  timeoutSeconds: 2
  failureThreshold: 90
readinessProbe:
  httpGet:
    path: {{ .root.Values.probes.readyPath }}
    port: http
  periodSeconds: 5
  timeoutSeconds: 2
  failureThreshold: 2
livenessProbe:
  httpGet:
    path: {{ .root.Values.probes.livePath }}
    port: http
  periodSeconds: 10
  timeoutSeconds: 3
  failureThreshold: 3
securityContext:
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  runAsNonRoot: true
  capabilities:
    drop: ["ALL"]
volumeMounts:
  - name: tmp
    mountPath: /tmp
  {{- if .root.Values.gateway.enabled }}
  - name: spool  # records wait here while the database is unavailable: lost if the pod is deleted
    mountPath: /var/lib/modelport/spool
  {{- if $log.passwordSecret.name }}
  - name: db-password
    mountPath: /run/secrets
    readOnly: true
  {{- end }}
  {{- end }}
{{- end -}}

{{- define "modelport.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.runAsUser }}
runAsGroup: {{ .Values.runAsUser }}
fsGroup: {{ .Values.runAsUser }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}
