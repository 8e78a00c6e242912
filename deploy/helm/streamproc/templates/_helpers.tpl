{{/* Names, labels and the parts of the pod spec shared by the worker and the one-off Jobs. */}}

{{- define "streamproc.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "streamproc.fullname" -}}
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

{{- define "streamproc.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "streamproc.selectorLabels" -}}
app.kubernetes.io/name: {{ include "streamproc.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The worker pods only: Jobs share name/instance but never the Service, PDB or spread selectors. */}}
{{- define "streamproc.workerSelectorLabels" -}}
{{ include "streamproc.selectorLabels" . }}
app.kubernetes.io/component: worker
{{- end }}

{{- define "streamproc.labels" -}}
helm.sh/chart: {{ include "streamproc.chart" . }}
{{ include "streamproc.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "streamproc.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "streamproc.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "streamproc.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ $tag }}
{{- end -}}
{{- end }}

{{- define "streamproc.metricsPort" -}}
{{- $m := .Values.config.metrics | default dict -}}
{{- $m.port | default 9464 | int -}}
{{- end }}

{{/* Seconds the worker may spend draining (config.limits.shutdown_timeout, default 30). */}}
{{- define "streamproc.shutdownTimeout" -}}
{{- $l := .Values.config.limits | default dict -}}
{{- if hasKey $l "shutdown_timeout" }}{{ $l.shutdown_timeout | float64 | ceil | int }}{{ else }}30{{ end -}}
{{- end }}

{{- define "streamproc.terminationGracePeriodSeconds" -}}
{{- $drain := include "streamproc.shutdownTimeout" . | int -}}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds -}}
{{ add $drain 15 }}
{{- else -}}
{{- $grace := .Values.terminationGracePeriodSeconds | int -}}
{{- if le $grace $drain -}}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be greater than config.limits.shutdown_timeout (%d): the pod would be killed while draining" $grace $drain) -}}
{{- end -}}
{{ $grace }}
{{- end -}}
{{- end }}

{{/* Environment of every streamproc container: secrets for ${VAR} references in the config. */}}
{{- define "streamproc.env" -}}
{{- if .Values.kafkaAuth.existingSecret }}
- name: KAFKA_SASL_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ .Values.kafkaAuth.existingSecret }}
      key: {{ .Values.kafkaAuth.usernameKey }}
- name: KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.kafkaAuth.existingSecret }}
      key: {{ .Values.kafkaAuth.passwordKey }}
{{- end }}
{{- if .Values.staticMembership.enabled }}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "streamproc.container" -}}
image: {{ include "streamproc.image" . | quote }}
imagePullPolicy: {{ .Values.image.pullPolicy }}
{{- $env := include "streamproc.env" . | trim }}
{{- if $env }}
env:
{{- $env | nindent 2 }}
{{- end }}
{{- if .Values.existingSecret }}
envFrom:
  - secretRef:
      name: {{ .Values.existingSecret }}
{{- end }}
securityContext:
  {{- toYaml .Values.securityContext | nindent 2 }}
resources:
  {{- toYaml .Values.resources | nindent 2 }}
volumeMounts:
  - name: config
    mountPath: /etc/streamproc/config.yaml
    subPath: config.yaml
    readOnly: true
  - name: tmp
    mountPath: /tmp
{{- if .Values.kafkaTLS.existingSecret }}
  - name: kafka-tls
    mountPath: {{ .Values.kafkaTLS.mountPath }}
    readOnly: true
{{- end }}
{{- end }}

{{- define "streamproc.volumes" -}}
- name: config
  configMap:
    name: {{ include "streamproc.fullname" . }}
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
{{- if .Values.kafkaTLS.existingSecret }}
- name: kafka-tls
  secret:
    secretName: {{ .Values.kafkaTLS.existingSecret }}
    defaultMode: 0440
{{- end }}
{{- end }}

{{- define "streamproc.podCommon" -}}
serviceAccountName: {{ include "streamproc.serviceAccountName" . }}
automountServiceAccountToken: {{ .Values.serviceAccount.automountServiceAccountToken }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
