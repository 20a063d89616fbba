{{/*
Named templates of the bailiwick chart. Each takes a context with .Values (this chart's
values) and .Release: inside this chart pass ".", from a workload's chart that depends on
this one pass (dict "Values" .Values.bailiwick "Release" .Release).
*/}}

{{/* The prefix of this release's objects: RELEASE-bailiwick. */}}
{{- define "bailiwick.name" -}}
{{ .Release.Name }}-bailiwick
{{- end }}

{{- define "bailiwick.labels" -}}
app.kubernetes.io/name: bailiwick
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The Secret (tls.crt, tls.key) of the data port's certificate. */}}
{{- define "bailiwick.tlsSecret" -}}
{{ .Values.tls.secretName | default (printf "%s-tls" (include "bailiwick.name" .)) }}
{{- end }}

{{/* Where the client CA Secret (ca.crt) is mounted, beside the server's pair. */}}
{{- define "bailiwick.clientCaMount" -}}
{{ .Values.tls.mountPath }}-client-ca
{{- end }}

{{/* Where the CRL ConfigMap (ca.crl) is mounted, beside the client CA. */}}
{{- define "bailiwick.crlMount" -}}
{{ .Values.tls.mountPath }}-crl
{{- end }}
