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
