{{/*
bailiwick.sidecar: the bailiwick container, as one item of a pod's container list. In the
workload's pod spec (see deploy/helm/example-app/templates/deployment.yaml):

  initContainers:        (nativeSidecar: true, the default; containers: when false)
    include "bailiwick.sidecar" (dict "Values" .Values.bailiwick "Release" .Release) | nindent 4
  volumes:
    include "bailiwick.volumes" (dict "Values" .Values.bailiwick "Release" .Release) | nindent 4

and give the pod a terminationGracePeriodSeconds larger than config.shutdown_grace_seconds.
*/}}
{{- define "bailiwick.sidecar" -}}
- name: bailiwick
  image: {{ printf "%s:%s" .Values.image.repository .Values.image.tag | quote }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  {{- if .Values.nativeSidecar }}
  restartPolicy: Always
  {{- end }}
  command: ["bailiwick"]
  args:
    - serve
    - --config
    - /etc/bailiwick/config/bailiwick.yaml
    - --admin-listen
    - "0.0.0.0:{{ .Values.adminPort }}"
  env:
    - name: BAILIWICK_REGION
      value: {{ required "bailiwick: set region, the region this proxy runs in" .Values.region | quote }}
    - name: BAILIWICK_UPSTREAM
      value: {{ required "bailiwick: set upstream, this region's storage endpoint" .Values.upstream | quote }}
    {{- range $variable, $key := .Values.secrets.keys.env }}
    - name: {{ $variable }}
      valueFrom:
        secretKeyRef:
          name: {{ $.Values.secrets.keys.name }}
          key: {{ $key }}
    {{- end }}
  ports:
    - name: admin
      containerPort: {{ .Values.adminPort }}
      protocol: TCP
  startupProbe:
    httpGet:
      path: /healthz
      port: admin
    periodSeconds: 1
    failureThreshold: 30
    timeoutSeconds: 2
  livenessProbe:
    httpGet:
      path: /healthz
      port: admin
    periodSeconds: 10
    failureThreshold: 3
    timeoutSeconds: 2
  readinessProbe:
    httpGet:
      path: /readyz
      port: admin
    periodSeconds: 5
    failureThreshold: 2
    timeoutSeconds: 2
  resources:
    {{- toYaml .Values.resources | nindent 4 }}
  securityContext:
    {{- toYaml .Values.securityContext | nindent 4 }}
  volumeMounts:
    {{- if include "bailiwick.keyService" . }}
    - name: bailiwick-key-service
      mountPath: {{ include "bailiwick.keyServiceMount" . }}
      readOnly: true
    {{- end }}
    - name: bailiwick-config
      mountPath: /etc/bailiwick/config
      readOnly: true
    - name: bailiwick-policies
      mountPath: /etc/bailiwick/policies
      readOnly: true
    - name: bailiwick-s3-credentials
      mountPath: /var/run/secrets/bailiwick/s3
      readOnly: true
    {{- if .Values.tls.enabled }}
    - name: bailiwick-tls
      mountPath: {{ .Values.tls.mountPath }}
      readOnly: true
    {{- if .Values.tls.clientCaSecret }}
    - name: bailiwick-tls-client-ca
      mountPath: {{ include "bailiwick.clientCaMount" . }}
      readOnly: true
    {{- if .Values.tls.crlConfigMap }}
    - name: bailiwick-tls-crl
      mountPath: {{ include "bailiwick.crlMount" . }}
      readOnly: true
    {{- end }}
    {{- end }}
    {{- end }}
    - name: bailiwick-tmp
      mountPath: /tmp
    {{- if .Values.auditShip.enabled }}
    - name: bailiwick-audit
      mountPath: {{ dir .Values.auditShip.path }}
    {{- end }}
{{- end }}

{{/*
bailiwick.volumes: the volumes bailiwick.sidecar mounts, as items of the pod's volume list.
The policy folder is one projected volume (files at the top, tests under tests/), mounted
whole: a ConfigMap update swaps its ..data symlink and bailiwick reloads it live.
*/}}
{{- define "bailiwick.volumes" -}}
- name: bailiwick-config
  configMap:
    name: {{ include "bailiwick.name" . }}-config
- name: bailiwick-policies
  projected:
    sources:
      - configMap:
          name: {{ include "bailiwick.name" . }}-policies
      {{- if .Values.policies.tests }}
      - configMap:
          name: {{ include "bailiwick.name" . }}-policy-tests
          items:
            {{- range $file, $_ := .Values.policies.tests }}
            - key: {{ $file }}
              path: tests/{{ $file }}
            {{- end }}
      {{- end }}
- name: bailiwick-s3-credentials
  secret:
    secretName: {{ .Values.secrets.s3Credentials.name }}
    # Readable by bailiwick's user without a pod-wide fsGroup; the volume is mounted into
    # bailiwick's container only.
    defaultMode: 0444
{{- if include "bailiwick.keyService" . }}
- name: bailiwick-key-service
  secret:
    secretName: {{ .Values.secrets.keyService.name }}
    defaultMode: 0444
{{- end }}
{{- if .Values.tls.enabled }}
{{- /* The whole Secret, never a subPath: cert-manager's renewal reaches the mounted files. */}}
- name: bailiwick-tls
  secret:
    secretName: {{ include "bailiwick.tlsSecret" . }}
    items:
      - key: tls.crt
        path: tls.crt
      - key: tls.key
        path: tls.key
    defaultMode: 0444
{{- if .Values.tls.clientCaSecret }}
- name: bailiwick-tls-client-ca
  secret:
    secretName: {{ .Values.tls.clientCaSecret }}
    items:
      - key: ca.crt
        path: ca.crt
    defaultMode: 0444
{{- if .Values.tls.crlConfigMap }}
{{- /* Mounted whole too: a new CRL published into the ConfigMap reaches the file, and is reloaded. */}}
- name: bailiwick-tls-crl
  configMap:
    name: {{ .Values.tls.crlConfigMap }}
    items:
      - key: ca.crl
        path: ca.crl
    defaultMode: 0444
{{- end }}
{{- end }}
{{- end }}
- name: bailiwick-tmp
  emptyDir:
    sizeLimit: 64Mi
{{- if .Values.auditShip.enabled }}
- name: bailiwick-audit
  emptyDir:
    sizeLimit: {{ .Values.auditShip.volumeSizeLimit }}
{{- end }}
{{- end }}
