{{/*
bailiwick.encryption: the `encryption` section of bailiwick.yaml from the values of the same
name, with the key service's secret read from the mounted Secret secrets.keyService
(bailiwick.keyServiceMount). With no key service named: key_service null and the key cache only.
*/}}
{{- define "bailiwick.keyServiceMount" -}}
/var/run/secrets/bailiwick/key-service
{{- end }}

{{- define "bailiwick.keyService" -}}
{{- with .Values.encryption }}{{ .key_service | default "" }}{{ end }}
{{- end }}

{{- define "bailiwick.encryption" -}}
{{- $kind := include "bailiwick.keyService" . }}
{{- $values := .Values.encryption | default dict }}
{{- $encryption := dict "key_service" nil "key_cache" ($values.key_cache | default dict) }}
{{- if $kind }}
{{- if not (has $kind (list "transit" "pkcs11")) }}
{{- fail (printf "bailiwick: encryption.key_service %q: transit or pkcs11 (the key file is for development and the demo only)" $kind) }}
{{- end }}
{{- $secret := required "bailiwick: set secrets.keyService.name, the Secret holding the key service's token or PIN" .Values.secrets.keyService.name }}
{{- $_ := set $encryption "key_service" $kind }}
{{- if eq $kind "transit" }}
{{- $_ := set $encryption "transit" (merge (dict "token_file" (printf "%s/token" (include "bailiwick.keyServiceMount" .))) (deepCopy ($values.transit | default dict))) }}
{{- else }}
{{- $_ := set $encryption "pkcs11" (merge (dict "pin_file" (printf "%s/pin" (include "bailiwick.keyServiceMount" .))) (deepCopy ($values.pkcs11 | default dict))) }}
{{- end }}
{{- end }}
{{- toYaml $encryption }}
{{- end }}
