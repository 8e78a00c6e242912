{{/* The one-off Jobs (replay, dead-letter redrive). A Job is named after a hash of its pod template:
     what it runs (arguments, image, configuration, secrets), not the release revision. An upgrade that
     changes none of these leaves the Job as it is (a Job's pod template cannot be changed anyway);
     one that changes them replaces it, and the new Job resumes from the progress its predecessor
     kept in Kafka (replay: --progress-group; redrive: its own group and markers). */}}

{{/* dict "root" $ "component" NAME "job" VALUES "args" LIST -> the Job object. */}}
{{- define "streamproc.job" -}}
{{- $pod := include "streamproc.jobPod" . -}}
apiVersion: batch/v1
kind: Job
metadata:
  name: {{ include "streamproc.jobName" (dict "root" .root "component" .component "pod" $pod) }}
  labels:
    {{- include "streamproc.labels" .root | nindent 4 }}
    app.kubernetes.io/component: {{ .component }}
spec:
  backoffLimit: {{ .job.backoffLimit }}
  ttlSecondsAfterFinished: {{ .job.ttlSecondsAfterFinished }}
  {{- with .job.activeDeadlineSeconds }}
  activeDeadlineSeconds: {{ . }}
  {{- end }}
  template:
    {{- $pod | nindent 4 }}
{{- end }}

{{- define "streamproc.jobName" -}}
{{- $prefix := printf "%s-%s" (include "streamproc.fullname" .root) .component | trunc 52 | trimSuffix "-" -}}
{{- printf "%s-%s" $prefix (.pod | sha256sum | trunc 10) -}}
{{- end }}

{{- define "streamproc.jobPod" -}}
metadata:
  annotations:
    checksum/config: {{ include (print .root.Template.BasePath "/configmap.yaml") .root | sha256sum }}
  labels:
    {{- include "streamproc.selectorLabels" .root | nindent 4 }}
    app.kubernetes.io/component: {{ .component }}
spec:
  {{- include "streamproc.podCommon" .root | nindent 2 }}
  restartPolicy: Never
  terminationGracePeriodSeconds: {{ include "streamproc.terminationGracePeriodSeconds" .root }}
  containers:
    - name: {{ .component }}
      {{- include "streamproc.container" .root | nindent 6 }}
      args:
        {{- toYaml .args | nindent 8 }}
  volumes:
    {{- include "streamproc.volumes" .root | nindent 4 }}
{{- end }}

{{/* The replay's arguments: its own, plus --progress-group <group_id>.replay.<hash of them> so that a
     retried pod or a later Job of the same replay resumes instead of starting over. */}}
{{- define "streamproc.replayArgs" -}}
{{- $args := .Values.jobs.replay.args -}}
{{- range $args -}}
{{- if or (eq (toString .) "--state") (hasPrefix "--state=" (toString .)) -}}
{{- fail "jobs.replay.args: --state keeps progress in a file of the pod, lost when the pod is retried; the chart keeps it in Kafka instead (--progress-group), so leave --state out" -}}
{{- end -}}
{{- end -}}
{{- $group := printf "%s.replay.%s" (.Values.config.kafka.group_id | default "streamproc") (toJson $args | sha256sum | trunc 12) -}}
{{- $explicit := false -}}
{{- range $args }}{{ if hasPrefix "--progress-group" (toString .) }}{{ $explicit = true }}{{ end }}{{ end -}}
{{- $all := concat (list "replay" "--config" "/etc/streamproc/config.yaml") $args -}}
{{- if not $explicit }}{{ $all = concat $all (list "--progress-group" $group) }}{{ end -}}
{{- toJson $all -}}
{{- end }}

{{- define "streamproc.replayJob" -}}
{{- include "streamproc.job" (dict "root" . "component" "replay" "job" .Values.jobs.replay "args" (include "streamproc.replayArgs" . | fromJsonArray)) -}}
{{- end }}

{{- define "streamproc.redriveJob" -}}
{{- $args := concat (list "dlq" "redrive" "--config" "/etc/streamproc/config.yaml") .Values.jobs.dlqRedrive.args -}}
{{- include "streamproc.job" (dict "root" . "component" "dlq-redrive" "job" .Values.jobs.dlqRedrive "args" $args) -}}
{{- end }}
