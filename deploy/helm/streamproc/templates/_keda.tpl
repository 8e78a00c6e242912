{{/* The KEDA trigger's view of the worker's Kafka connection: the same bootstrap servers, SASL
     mechanism, TLS and secrets, or a refusal to render when KEDA could not connect like the worker. */}}

{{/* config.kafka.bootstrap_servers with ${VAR} expanded as the worker would: from extraEnv entries with
     a literal value, else the reference's default (${VAR:-x}, ${VAR-x}); anything else is refused,
     since KEDA reads the value literally. */}}
{{- define "streamproc.keda.bootstrapServers" -}}
{{- $servers := .Values.config.kafka.bootstrap_servers | toString -}}
{{- $env := dict -}}
{{- range .Values.extraEnv }}{{ if hasKey . "value" }}{{ $_ := set $env .name (toString .value) }}{{ end }}{{ end -}}
{{- range $ref := regexFindAll "\\$\\{[^}]*\\}" $servers -1 -}}
{{- $name := regexReplaceAll "^\\$\\{([A-Za-z_][A-Za-z0-9_]*).*\\}$" $ref "${1}" -}}
{{- $value := "" -}}
{{- if hasKey $env $name -}}
{{- $value = get $env $name -}}
{{- else if regexMatch "^\\$\\{[A-Za-z_][A-Za-z0-9_]*:?-" $ref -}}
{{- $value = regexReplaceAll "^\\$\\{[A-Za-z_][A-Za-z0-9_]*:?-(.*)\\}$" $ref "${1}" -}}
{{- else -}}
{{- fail (printf "autoscaling.keda: config.kafka.bootstrap_servers references %s, which KEDA cannot expand (it reads the trigger literally): write the broker addresses in config.kafka.bootstrap_servers, or give %s a literal value in extraEnv" $ref $name) -}}
{{- end -}}
{{- $servers = replace $ref $value $servers -}}
{{- end -}}
{{- if contains "$" $servers -}}
{{- fail (printf "autoscaling.keda: config.kafka.bootstrap_servers (%s) still holds a '$' after expansion" $servers) -}}
{{- end -}}
{{- $servers -}}
{{- end }}

{{/* security.protocol of the worker's client, upper case (PLAINTEXT when unset). */}}
{{- define "streamproc.keda.protocol" -}}
{{- $client := .Values.config.kafka.client | default dict -}}
{{- get $client "security.protocol" | default "PLAINTEXT" | toString | upper -}}
{{- end }}

{{/* KEDA's name for the worker's SASL mechanism ("" without SASL). */}}
{{- define "streamproc.keda.sasl" -}}
{{- $protocol := include "streamproc.keda.protocol" . -}}
{{- if hasPrefix "SASL_" $protocol -}}
{{- $client := .Values.config.kafka.client | default dict -}}
{{- $mechanism := get $client "sasl.mechanism" | default "GSSAPI" | toString | upper -}}
{{- $names := dict "PLAIN" "plaintext" "SCRAM-SHA-256" "scram_sha256" "SCRAM-SHA-512" "scram_sha512" -}}
{{- if not (hasKey $names $mechanism) -}}
{{- fail (printf "autoscaling.keda: the worker uses sasl.mechanism %s, which the chart's TriggerAuthentication does not carry (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512); set autoscaling.keda.authenticationRef to a TriggerAuthentication of your own" $mechanism) -}}
{{- end -}}
{{- get $names $mechanism -}}
{{- end -}}
{{- end }}

{{- define "streamproc.keda.tls" -}}
{{- $protocol := include "streamproc.keda.protocol" . -}}
{{- if or (eq $protocol "SSL") (eq $protocol "SASL_SSL") }}enable{{ end -}}
{{- end }}

{{/* The kafkaTLS secret's key for a client file setting (ssl.ca.location, ...), "" when unset. The file
     must be one the chart mounts from kafkaTLS.existingSecret, so KEDA can read the same key. */}}
{{- define "streamproc.keda.tlsKey" -}}
{{- $client := .root.Values.config.kafka.client | default dict -}}
{{- $location := get $client .setting | default "" | toString -}}
{{- if $location -}}
{{- $dir := printf "%s/" (.root.Values.kafkaTLS.mountPath | trimSuffix "/") -}}
{{- if or (not .root.Values.kafkaTLS.existingSecret) (not (hasPrefix $dir $location)) -}}
{{- fail (printf "autoscaling.keda: config.kafka.client %s (%s) is not a file of kafkaTLS.existingSecret mounted at %s, so the TriggerAuthentication cannot give KEDA the same file; set kafkaTLS.existingSecret and point %s into %s, or set autoscaling.keda.authenticationRef" .setting $location .root.Values.kafkaTLS.mountPath .setting $dir) -}}
{{- end -}}
{{- trimPrefix $dir $location -}}
{{- end -}}
{{- end }}

{{/* The TriggerAuthentication the trigger names: the operator's own (autoscaling.keda.authenticationRef),
     or the chart's when the worker uses SASL or TLS files from its secrets; "" when KEDA needs none. */}}
{{- define "streamproc.keda.authRef" -}}
{{- if .Values.autoscaling.keda.authenticationRef -}}
{{- .Values.autoscaling.keda.authenticationRef -}}
{{- else -}}
{{- $files := list -}}
{{- range $setting := list "ssl.ca.location" "ssl.certificate.location" "ssl.key.location" -}}
{{- $files = append $files (include "streamproc.keda.tlsKey" (dict "root" $ "setting" $setting)) -}}
{{- end -}}
{{- if or (include "streamproc.keda.sasl" .) (compact $files) -}}
{{- printf "%s-kafka" (include "streamproc.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end }}
