{{- define "pylon.cp" -}}{{ .Release.Name }}-pylon-cp{{- end -}}
{{- define "pylon.dp" -}}{{ .Release.Name }}-pylon-dp{{- end -}}
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
{{- range $i := until (int .Values.controlPlane.replicas) -}}
{{- $list = append $list (printf "http://%s-%d.%s.%s.svc:%d" (include "pylon.cp" $root) $i (include "pylon.cp" $root) $root.Release.Namespace (int $root.Values.controlPlane.ports.admin)) -}}
{{- end -}}
{{- join "," $list -}}
{{- end -}}
