{{/*
Everything one mesh workload needs: ServiceAccount, Deployment, HorizontalPodAutoscaler,
PodDisruptionBudget and NetworkPolicy. Called with (dict "root" $ "component" "<name>"),
where component is a service name (microservices mode) or "all" (all-in-one mode).
Kept in one place so the six services cannot drift apart; each service still has its own
template file (balance.yaml, ...) that decides whether it is rendered.
*/}}
{{- define "giftcard.workload" -}}
{{- $root := .root }}
{{- $component := .component }}
{{- $name := include "giftcard.componentName" . }}
{{- $v := include "giftcard.componentValues" . | fromYaml }}
{{- $reachesVendors := or (eq $component "gateway") (eq $component "all") }}
{{- if $root.Values.serviceAccount.create }}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ $name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "giftcard.labels" . | nindent 4 }}
  {{- with $root.Values.serviceAccount.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
# The mesh never calls the Kubernetes API.
automountServiceAccountToken: false
---
{{- end }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "giftcard.labels" . | nindent 4 }}
spec:
  {{- if not $v.autoscaling.enabled }}
  replicas: {{ $v.replicas }}
  {{- end }}
  revisionHistoryLimit: 5
  selector:
    matchLabels:
      {{- include "giftcard.selectorLabels" . | nindent 6 }}
  strategy:
    type: RollingUpdate
    rollingUpdate:
      # Never below the current capacity during a rollout.
      maxUnavailable: 0
      maxSurge: 1
  template:
    metadata:
      labels:
        {{- include "giftcard.labels" . | nindent 8 }}
        {{- with $v.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        # Roll the pods when the config or a chart-managed secret changes.
        checksum/config: {{ include (print $root.Template.BasePath "/configmap.yaml") $root | sha256sum }}
        # Hash of the secret *values*, not the rendered Secrets: generated keys would change it.
        checksum/secrets: {{ list $root.Values.merchants $root.Values.vendors $root.Values.security $root.Values.redis.auth | toJson | sha256sum }}
        {{- if $root.Values.metrics.podAnnotations }}
        prometheus.io/scrape: "true"
        prometheus.io/port: {{ $root.Values.ports.metrics | quote }}
        prometheus.io/path: /metrics
        {{- end }}
        {{- with $v.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      {{- if $root.Values.serviceAccount.create }}
      serviceAccountName: {{ $name }}
      {{- end }}
      automountServiceAccountToken: false
      # Service links would inject GIFTCARD_<SERVICE>_PORT=tcp://... variables that collide
      # with the GIFTCARD_* settings namespace.
      enableServiceLinks: false
      terminationGracePeriodSeconds: {{ include "giftcard.terminationGracePeriodSeconds" $root }}
      {{- with $v.priorityClassName }}
      priorityClassName: {{ . }}
      {{- end }}
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        runAsNonRoot: true
        runAsUser: 10001
        runAsGroup: 10001
        fsGroup: 10001
        seccompProfile:
          type: RuntimeDefault
      containers:
        - name: giftcard
          image: {{ include "giftcard.image" $root }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          args: ["serve", {{ $component | quote }}]
          ports:
            - name: grpc
              containerPort: {{ $root.Values.ports.grpc }}
              protocol: TCP
            - name: metrics
              containerPort: {{ $root.Values.ports.metrics }}
              protocol: TCP
          env:
            - name: GIFTCARD_CONFIG
              value: /etc/giftcard/config.yaml
            - name: GIFTCARD_MERCHANTS_FILE
              value: /etc/giftcard/merchants/merchants.yaml
            - name: GIFTCARD_REDIS__URL
              value: {{ include "giftcard.redisUrl" $root | quote }}
            - name: GIFTCARD_REDIS__TLS
              value: {{ $root.Values.redis.tls | quote }}
            {{- with include "giftcard.redisSecretName" $root }}
            - name: GIFTCARD_REDIS__PASSWORD
              valueFrom:
                secretKeyRef:
                  name: {{ . }}
                  key: {{ include "giftcard.redisSecretKey" $root }}
            {{- end }}
            - name: GIFTCARD_SECURITY__CARD_HASH_KEY
              valueFrom:
                secretKeyRef:
                  name: {{ include "giftcard.cardHashSecretName" $root }}
                  key: {{ include "giftcard.cardHashSecretKey" $root }}
            {{- if ne $component "all" }}
            # The mesh's own identity for calls between services (scheduled jobs, recovery).
            - name: GIFTCARD_SECURITY__INTERNAL_TOKEN
              valueFrom:
                secretKeyRef:
                  name: {{ include "giftcard.internalTokenSecretName" $root }}
                  key: {{ include "giftcard.internalTokenSecretKey" $root }}
            {{- end }}
            {{- with $root.Values.telemetry.otlpEndpoint }}
            - name: GIFTCARD_TELEMETRY__OTLP_ENDPOINT
              value: {{ . | quote }}
            {{- end }}
            - name: GIFTCARD_TELEMETRY__TRACE_SAMPLE_RATIO
              value: {{ $root.Values.telemetry.traceSampleRatio | quote }}
            {{- if ne $component "all" }}
            {{- range splitList " " (include "giftcard.serviceNames" $root) }}
            - name: GIFTCARD_ENDPOINTS__{{ upper . }}
              value: {{ printf "%s:%v" (include "giftcard.componentName" (dict "root" $root "component" .)) $root.Values.ports.grpc | quote }}
            {{- end }}
            {{- end }}
            - name: POD_NAME
              valueFrom:
                fieldRef:
                  fieldPath: metadata.name
            - name: GIFTCARD_TELEMETRY__SERVICE_NAME
              value: {{ ternary "giftcard" (printf "giftcard-%s" $component) (eq $component "all") | quote }}
            - name: OTEL_RESOURCE_ATTRIBUTES
              value: {{ printf "service.namespace=giftcard,service.version=%s,k8s.namespace.name=%s,k8s.pod.name=$(POD_NAME)" $root.Chart.AppVersion $root.Release.Namespace | quote }}
            {{- with $v.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          # grpc.health.v1 on the serving port; "" = the server as a whole.
          startupProbe:
            grpc:
              port: {{ $root.Values.ports.grpc }}
            periodSeconds: 2
            failureThreshold: 30
          readinessProbe:
            grpc:
              port: {{ $root.Values.ports.grpc }}
            periodSeconds: 5
            timeoutSeconds: 2
            failureThreshold: 2
          livenessProbe:
            grpc:
              port: {{ $root.Values.ports.grpc }}
            periodSeconds: 10
            timeoutSeconds: 3
            failureThreshold: 3
          lifecycle:
            preStop:
              # Keep serving while endpoints and clients drop this pod, then SIGTERM drains.
              exec:
                command: ["sleep", {{ $root.Values.shutdown.preStopSleepSeconds | quote }}]
          resources:
            {{- toYaml $v.resources | nindent 12 }}
          securityContext:
            runAsNonRoot: true
            runAsUser: 10001
            runAsGroup: 10001
            allowPrivilegeEscalation: false
            privileged: false
            readOnlyRootFilesystem: true
            capabilities:
              drop: ["ALL"]
          volumeMounts:
            - name: tmp
              mountPath: /tmp
            - name: config
              mountPath: /etc/giftcard/config.yaml
              subPath: config.yaml
              readOnly: true
            - name: merchants
              mountPath: /etc/giftcard/merchants
              readOnly: true
            {{- if $reachesVendors }}
            - name: vendors
              mountPath: /etc/giftcard/vendors
              readOnly: true
            {{- end }}
      volumes:
        - name: tmp
          emptyDir:
            sizeLimit: 64Mi
        - name: config
          configMap:
            name: {{ include "giftcard.fullname" $root }}-config
        # A directory mount (no subPath), so a rotated secret reaches running pods.
        - name: merchants
          secret:
            secretName: {{ include "giftcard.merchantsSecretName" $root }}
            items:
              - key: {{ include "giftcard.merchantsSecretKey" $root }}
                path: merchants.yaml
        {{- if $reachesVendors }}
        - name: vendors
          secret:
            secretName: {{ include "giftcard.vendorsSecretName" $root }}
        {{- end }}
      {{- if $v.spreadAcrossNodes }}
      topologySpreadConstraints:
        - maxSkew: 1
          topologyKey: kubernetes.io/hostname
          whenUnsatisfiable: ScheduleAnyway
          labelSelector:
            matchLabels:
              {{- include "giftcard.selectorLabels" . | nindent 14 }}
      {{- end }}
      {{- with $v.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- if $v.autoscaling.enabled }}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ $name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "giftcard.labels" . | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ $name }}
  minReplicas: {{ $v.autoscaling.minReplicas }}
  maxReplicas: {{ $v.autoscaling.maxReplicas }}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ $v.autoscaling.targetCPUUtilizationPercentage }}
{{- end }}
{{- if $v.podDisruptionBudget.enabled }}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ $name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "giftcard.labels" . | nindent 4 }}
spec:
  maxUnavailable: {{ $v.podDisruptionBudget.maxUnavailable }}
  # A crash-looping pod must not block node drains.
  unhealthyPodEvictionPolicy: AlwaysAllow
  selector:
    matchLabels:
      {{- include "giftcard.selectorLabels" . | nindent 6 }}
{{- end }}
{{- if $root.Values.networkPolicy.enabled }}
{{- $np := $root.Values.networkPolicy }}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ $name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "giftcard.labels" . | nindent 4 }}
spec:
  podSelector:
    matchLabels:
      {{- include "giftcard.selectorLabels" . | nindent 6 }}
  policyTypes: ["Ingress", "Egress"]
  ingress:
    {{- if eq $component "gateway" }}
    # The gateway is internal: only this release's mesh pods may call it.
    - from:
        - podSelector:
            {{- include "giftcard.meshPodSelector" $root | nindent 12 }}
      ports:
        - port: {{ $root.Values.ports.grpc }}
          protocol: TCP
    {{- else }}
    # Public API: callers (OMS, POS, web stores) as configured, and the mesh itself.
    - ports:
        - port: {{ $root.Values.ports.grpc }}
          protocol: TCP
      {{- with $np.clientsFrom }}
      from:
        {{- toYaml . | nindent 8 }}
        - podSelector:
            {{- include "giftcard.meshPodSelector" $root | nindent 12 }}
      {{- end }}
    {{- end }}
    - ports:
        - port: {{ $root.Values.ports.metrics }}
          protocol: TCP
      {{- with $np.metricsFrom }}
      from:
        {{- toYaml . | nindent 8 }}
      {{- end }}
  egress:
    - ports:
        - port: 53
          protocol: UDP
        - port: 53
          protocol: TCP
      {{- with $np.dnsTo }}
      to:
        {{- toYaml . | nindent 8 }}
      {{- end }}
    - ports:
        - port: {{ include "giftcard.redisPort" $root }}
          protocol: TCP
      {{- if $root.Values.redis.bundled.enabled }}
      to:
        - podSelector:
            matchLabels:
              {{- include "giftcard.selectorLabels" (dict "root" $root "component" "redis") | nindent 14 }}
      {{- else }}
      {{- with $np.redisTo }}
      to:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- end }}
    {{- if $root.Values.telemetry.otlpEndpoint }}
    - ports:
        - port: {{ include "giftcard.otlpPort" $root }}
          protocol: TCP
      {{- with $np.telemetryTo }}
      to:
        {{- toYaml . | nindent 8 }}
      {{- end }}
    {{- end }}
    {{- if and (ne $component "all") (ne $component "gateway") }}
    # Service to service calls (e.g. every flow calls the gateway).
    - to:
        - podSelector:
            {{- include "giftcard.meshPodSelector" $root | nindent 12 }}
      ports:
        - port: {{ $root.Values.ports.grpc }}
          protocol: TCP
    {{- end }}
    {{- if $reachesVendors }}
    # Vendor APIs: only the provider gateway talks to processors.
    - to:
        {{- toYaml $np.vendorsTo | nindent 8 }}
      ports:
        {{- range $np.vendorPorts }}
        - port: {{ . }}
          protocol: TCP
        {{- end }}
    {{- end }}
    {{- with $np.extraEgress }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end }}
{{- end }}

{{/*
The ClusterIP Service of one mesh service. It exists in both modes with the same name, so a
client's address does not change when the chart switches between microservices and all-in-one.
*/}}
{{- define "giftcard.service" -}}
{{- $root := .root }}
{{- $target := ternary "all" .component (eq $root.Values.mode "all-in-one") }}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "giftcard.componentName" . }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "giftcard.labels" . | nindent 4 }}
spec:
  type: ClusterIP
  selector:
    {{- include "giftcard.selectorLabels" (dict "root" $root "component" $target) | nindent 4 }}
  ports:
    - name: grpc
      port: {{ $root.Values.ports.grpc }}
      targetPort: grpc
      protocol: TCP
      appProtocol: kubernetes.io/h2c
    {{- /* In all-in-one mode only the <fullname> Service carries metrics: one scrape per pod. */}}
    {{- if or (ne $target "all") (eq .component "all") }}
    - name: metrics
      port: {{ $root.Values.ports.metrics }}
      targetPort: metrics
      protocol: TCP
    {{- end }}
{{- end }}
