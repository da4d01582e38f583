{{/* Chart name, truncated to the 63 characters a label value allows. */}}
{{- define "wapipe-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified name used as the prefix of every object. */}}
{{- define "wapipe-operator.fullname" -}}
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

{{- define "wapipe-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "wapipe-operator.labels" -}}
helm.sh/chart: {{ include "wapipe-operator.chart" . }}
{{ include "wapipe-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ include "wapipe-operator.imageTag" . | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: wapipe
{{- end }}

{{/* Immutable selector labels (never add to these: Deployment selectors cannot change). */}}
{{- define "wapipe-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "wapipe-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "wapipe-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "wapipe-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Tag of the operator image: image.tag, else the chart's appVersion. */}}
{{- define "wapipe-operator.imageTag" -}}
{{- default .Chart.AppVersion .Values.image.tag | toString }}
{{- end }}

{{- define "wapipe-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (include "wapipe-operator.imageTag" .) }}
{{- end }}

{{/* Image for ingress and worker pods: the operator's own image unless overridden. */}}
{{- define "wapipe-operator.workloadImage" -}}
{{- $repo := default .Values.image.repository .Values.workloadImage.repository }}
{{- $tag := default (include "wapipe-operator.imageTag" .) .Values.workloadImage.tag | toString }}
{{- printf "%s:%s" $repo $tag }}
{{- end }}
