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
{{- $list = append $list (printf "%s://%s-%d.%s.%s.svc:%d" (ternary "https" "http" (ne $root.Values.tls.secret "")) (include "pylon.cp" $root) $i (include "pylon.cp" $root) $root.Release.Namespace (int $root.Values.controlPlane.ports.admin)) -}}
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

{{- /* Values the schema cannot judge alone, checked once for every template. */ -}}
{{- define "pylon.validate" -}}
{{- $tls := .Values.tls -}}
{{- if and $tls.clientAuth.enabled (not $tls.secret) -}}
{{- fail "tls.clientAuth.enabled needs tls.secret (mutual TLS is TLS first)" -}}
{{- end -}}
{{- if and $tls.dataPlaneSecret (not $tls.clientAuth.enabled) -}}
{{- fail "tls.dataPlaneSecret needs tls.clientAuth.enabled (the control plane must accept the certificate)" -}}
{{- end -}}
{{- if and $tls.secret (not $tls.dataPlaneSecret) (not $tls.caSecret) -}}
{{- fail "tls.secret needs tls.caSecret or tls.dataPlaneSecret: the CA data planes trust for the control plane" -}}
{{- end -}}
{{- if and $tls.dataPlaneSecret .Values.credentials.dataPlaneSecret -}}
{{- fail "give data planes a certificate (tls.dataPlaneSecret) or a token (credentials.dataPlaneSecret), not both" -}}
{{- end -}}
{{- if and (not .Values.tokenSecret) (not .Values.credentials.secret) (not (and $tls.clientAuth.enabled $tls.dataPlaneSecret)) -}}
{{- fail "tokenSecret may be empty only with credentials.secret, or with tls.clientAuth.enabled and tls.dataPlaneSecret" -}}
{{- end -}}
{{- if and .Values.credentials.dataPlaneSecret (not .Values.credentials.secret) -}}
{{- fail "credentials.dataPlaneSecret needs credentials.secret (the control plane must know the data planes' token)" -}}
{{- end -}}
{{- if and $tls.caSecret (not $tls.secret) -}}
{{- fail "tls.caSecret needs tls.secret (without TLS there is no CA to trust)" -}}
{{- end -}}
{{- if and (ne $tls.clientAuth.trustDomain "pylon") (not $tls.clientAuth.enabled) -}}
{{- fail "tls.clientAuth.trustDomain needs tls.clientAuth.enabled" -}}
{{- end -}}
{{- if and .Values.redis.enabled (not .Values.redis.urlSecret) -}}
{{- fail "redis.enabled needs redis.urlSecret (the Secret holding the URL)" -}}
{{- end -}}
{{- $cp := .Values.controlPlane.ports -}}
{{- if or (eq (int $cp.admin) (int $cp.raft)) (eq (int $cp.admin) (int $cp.ops)) (eq (int $cp.raft) (int $cp.ops)) -}}
{{- fail "controlPlane.ports: admin, raft and ops must differ" -}}
{{- end -}}
{{- if eq (int .Values.dataPlane.ports.http) (int .Values.dataPlane.ports.ops) -}}
{{- fail "dataPlane.ports: http and ops must differ" -}}
{{- end -}}
{{- $hpa := .Values.dataPlane.autoscaling -}}
{{- if and $hpa.enabled (gt (int $hpa.minReplicas) (int $hpa.maxReplicas)) -}}
{{- fail "dataPlane.autoscaling.minReplicas cannot exceed maxReplicas" -}}
{{- end -}}
{{- end -}}
