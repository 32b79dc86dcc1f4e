{{- /* Release names are cut to 30 characters so every name stays within 63 (StatefulSet pods also carry a revision hash). */ -}}
{{- define "pylon.release" -}}{{ .Release.Name | trunc 30 | trimSuffix "-" }}{{- end -}}
{{- define "pylon.cp" -}}{{ include "pylon.release" . }}-pylon-cp{{- end -}}
{{- define "pylon.dp" -}}{{ include "pylon.release" . }}-pylon-dp{{- end -}}
{{- define "pylon.labels" -}}
app.kubernetes.io/name: pylon
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}
{{- define "pylon.peers" -}}
{{- $root := .root -}}
{{- range $i := until (int .count) -}}
--peer {{ add $i 1 }}={{ include "pylon.cp" $root }}-{{ $i }}.{{ include "pylon.cp" $root }}.{{ $root.Release.Namespace }}.svc:{{ $root.Values.controlPlane.ports.raft }} {{ end -}}
{{- end -}}
{{- define "pylon.controlPlanes" -}}
{{- $root := . -}}
{{- $list := list -}}
{{- /* The founding members only: a node that has not been joined yet would take a subscription and send nothing. */ -}}
{{- range $i := until (int .Values.controlPlane.founding) -}}
{{- $list = append $list (printf "http://%s-%d.%s.%s.svc:%d" (include "pylon.cp" $root) $i (include "pylon.cp" $root) $root.Release.Namespace (int $root.Values.controlPlane.ports.admin)) -}}
{{- end -}}
{{- join "," $list -}}
{{- end -}}
{{- define "pylon.containerSecurity" -}}
allowPrivilegeEscalation: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}
