{{/* The release's base name: the release name, or release-tender. */}}
{{- define "tender.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "tender.controlplane" -}}
{{- printf "%s-controlplane" (include "tender.fullname" .) -}}
{{- end -}}

{{- define "tender.webhookConfig" -}}
{{- printf "%s-sidecar-injector" (include "tender.fullname" .) -}}
{{- end -}}

{{- define "tender.webhookSecret" -}}
{{- printf "%s-webhook-tls" (include "tender.fullname" .) -}}
{{- end -}}

{{- define "tender.caSecret" -}}
{{- printf "%s-ca" (include "tender.fullname" .) -}}
{{- end -}}

{{- define "tender.serviceAccount" -}}
{{- default (include "tender.controlplane" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "tender.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controlplane
{{- end -}}

{{- define "tender.labels" -}}
{{ include "tender.selectorLabels" . }}
app.kubernetes.io/part-of: tender
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "tender.image" -}}
{{- printf "%s:%s" .repository (default $.appVersion .tag) -}}
{{- end -}}
