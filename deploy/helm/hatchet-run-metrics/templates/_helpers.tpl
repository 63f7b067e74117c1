{{- define "hrm.name" -}}
{{- .Chart.Name -}}
{{- end -}}

{{- define "hrm.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "hrm.selectorLabels" -}}
app.kubernetes.io/name: {{ include "hrm.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "hrm.labels" -}}
{{ include "hrm.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* The container: the same in the Deployment and in the spec NOTES.txt prints for a sidecar. */}}
{{- define "hrm.container" -}}
name: hatchet-run-metrics
image: "{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}"
imagePullPolicy: {{ .Values.image.pullPolicy }}
args: ["run", "--config", "/etc/hatchet-run-metrics/config.toml"]
env:
  - name: HATCHET_RUN_METRICS_BROKERS
    value: {{ .Values.kafka.brokers | quote }}
  # Static membership: a container restarted in the same pod gets its partitions back at once.
  - name: HATCHET_RUN_METRICS_GROUP_INSTANCE_ID
    valueFrom:
      fieldRef:
        fieldPath: metadata.name
ports:
  - name: metrics
    containerPort: 9477
    protocol: TCP
# A TCP check: the connection cap answers a flood of clients with 503, which must not restart it.
livenessProbe:
  tcpSocket:
    port: metrics
  initialDelaySeconds: 5
  periodSeconds: 10
startupProbe:
  httpGet:
    path: /healthz
    port: metrics
  periodSeconds: 2
  failureThreshold: 30
# 200 once partitions are assigned, restored, and a broker is up.
readinessProbe:
  httpGet:
    path: /readyz
    port: metrics
  initialDelaySeconds: 5
  periodSeconds: 10
resources:
  {{- toYaml .Values.resources | nindent 2 }}
securityContext:
  runAsNonRoot: true
  runAsUser: 65532
  runAsGroup: 65532
  readOnlyRootFilesystem: true
  allowPrivilegeEscalation: false
  capabilities:
    drop: ["ALL"]
volumeMounts:
  - name: hatchet-run-metrics-config
    mountPath: /etc/hatchet-run-metrics
    readOnly: true
  {{- if .Values.kafka.tlsSecret }}
  - name: kafka-tls
    mountPath: /etc/kafka-tls
    readOnly: true
  {{- end }}
{{- end -}}

{{- define "hrm.volumes" -}}
- name: hatchet-run-metrics-config
  {{- if .Values.configSecret }}
  secret:
    secretName: {{ .Values.configSecret }}
  {{- else }}
  configMap:
    name: {{ include "hrm.fullname" . }}
  {{- end }}
{{- if .Values.kafka.tlsSecret }}
- name: kafka-tls
  secret:
    secretName: {{ .Values.kafka.tlsSecret }}
{{- end }}
{{- end -}}
