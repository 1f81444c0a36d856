#!/usr/bin/env bash
# The main job: a local control plane (etcd + kube-apiserver) with the provider's CRDs installed,
# and the manager running against it and the local Docker engine. Ctrl+C stops everything;
# the cluster's data is kept in $CAPD_RS_CACHE/local for the next run.
#
#   LOCAL_API_PORT         the apiserver's port on 127.0.0.1 (default 16443; etcd uses the next two)
#   LOCAL_WEBHOOK_PORT     the manager's webhook port (default 9443)
#   LOCAL_HEALTH_PORT      /healthz and /readyz on 127.0.0.1 (default 9440)
#   LOCAL_METRICS_PORT     /metrics on 127.0.0.1, plain HTTP for local use (default 8443)
#   CAPD_RS_FEATURE_GATES  passed to the manager's --feature-gates (e.g. ClusterTopology=true)
#   CAPD_RS_PRIVILEGED_NODES  false where the engine refuses privileged containers (default true)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/.."
source hack/lib.sh

: "${LOCAL_API_PORT:=16443}" "${LOCAL_WEBHOOK_PORT:=9443}" "${LOCAL_HEALTH_PORT:=9440}" "${LOCAL_METRICS_PORT:=8443}"
etcd_port=$((LOCAL_API_PORT + 1)) etcd_peer_port=$((LOCAL_API_PORT + 2))
state="$CAPD_RS_CACHE/local"
mkdir -p "$state/certs"

bins=$(bash hack/setup.sh --without-tools)
log "building the manager"
cargo build --quiet --bin manager

if [[ ! -f "$state/sa.key" ]]; then
  openssl genrsa -out "$state/sa.key" 2048 2>/dev/null
  openssl rsa -in "$state/sa.key" -pubout -out "$state/sa.pub" 2>/dev/null
  echo "$(openssl rand -hex 16),admin,admin,system:masters" >"$state/tokens.csv"
fi
token=$(cut -d, -f1 "$state/tokens.csv")

pids=()
cleanup() {
  trap - EXIT INT TERM
  log "stopping"
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

for port in "$LOCAL_API_PORT" "$etcd_port" "$etcd_peer_port" "$LOCAL_WEBHOOK_PORT"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    die "port $port on 127.0.0.1 is in use (another hack/run.sh?). Set LOCAL_API_PORT or LOCAL_WEBHOOK_PORT."
  fi
done

"$bins/etcd" --data-dir="$state/etcd" --listen-client-urls="http://127.0.0.1:$etcd_port" \
  --advertise-client-urls="http://127.0.0.1:$etcd_port" --listen-peer-urls="http://127.0.0.1:$etcd_peer_port" \
  >"$state/etcd.log" 2>&1 &
pids+=($!)
"$bins/kube-apiserver" --etcd-servers="http://127.0.0.1:$etcd_port" --cert-dir="$state/certs" \
  --secure-port="$LOCAL_API_PORT" --bind-address=127.0.0.1 --advertise-address=127.0.0.1 \
  --service-cluster-ip-range=10.0.0.0/24 --allow-privileged=true --authorization-mode=RBAC \
  --token-auth-file="$state/tokens.csv" --service-account-issuer="https://127.0.0.1:$LOCAL_API_PORT" \
  --service-account-key-file="$state/sa.pub" --service-account-signing-key-file="$state/sa.key" \
  --disable-admission-plugins=ServiceAccount >"$state/kube-apiserver.log" 2>&1 &
pids+=($!)

export KUBECONFIG="$state/kubeconfig"
for _ in $(seq 1 600); do [[ -s "$state/certs/apiserver.crt" ]] && break; sleep 0.1; done
[[ -s "$state/certs/apiserver.crt" ]] || die "kube-apiserver did not start; see $state/kube-apiserver.log"
kubectl config set-cluster local --server="https://127.0.0.1:$LOCAL_API_PORT" \
  --certificate-authority="$state/certs/apiserver.crt" --embed-certs >/dev/null
kubectl config set-credentials admin --token="$token" >/dev/null
kubectl config set-context local --cluster=local --user=admin >/dev/null
kubectl config use-context local >/dev/null
for _ in $(seq 1 600); do
  [[ $(kubectl get --raw /readyz 2>/dev/null) == ok ]] && break
  sleep 0.1
done
[[ $(kubectl get --raw /readyz 2>/dev/null) == ok ]] || die "kube-apiserver is not ready; see $state/kube-apiserver.log"

kubectl apply --server-side -f config/crd/bases >/dev/null
if ! kubectl get crd clusters.cluster.x-k8s.io >/dev/null 2>&1; then
  # No core Cluster API here: minimal Cluster/Machine CRDs let you play its part by hand.
  kubectl apply --server-side -f hack/capi-crds.yaml >/dev/null
fi
kubectl wait --for=condition=Established crd --all --timeout=60s >/dev/null

# The default load-balancer image. Where no registry is reachable (air-gapped machines, CI),
# the local HAProxy test image stands in for it, so a default DockerCluster still works.
lb_image=kindest/haproxy:v20230606-42a2262b
if ! docker image inspect "$lb_image" >/dev/null 2>&1 && ! timeout 120 docker pull -q "$lb_image" >/dev/null 2>&1; then
  docker tag capd-rs-test/haproxy:local "$lb_image"
  log "cannot pull $lb_image: tagged the local capd-rs-test/haproxy:local as $lb_image"
fi

# The webhooks: a local CA and serving certificate for 127.0.0.1 (certs/generate.sh; a new
# serving certificate when it is missing or expires within 30 days), and the committed webhook
# configurations pointed at the manager on this machine instead of the in-cluster Service.
certs="$state/webhook-certs"
if [[ ! -s "$certs/tls.key" ]] || ! openssl x509 -checkend $((30 * 86400)) -noout -in "$certs/tls.crt" >/dev/null 2>&1; then
  bash certs/generate.sh "$certs" >/dev/null
fi
ca_bundle=$(base64 -w0 <"$certs/ca.crt")
sed -e '/^    service:$/d' -e '/^      name: webhook-service$/d' -e '/^      namespace: system$/d' \
  -e "s|^      path: \(.*\)$|    url: https://127.0.0.1:$LOCAL_WEBHOOK_PORT\1\n    caBundle: $ca_bundle|" \
  -e 's|^  name: \(.*-webhook-configuration\)$|  name: capd-rs-local-\1|' \
  config/webhook/manifests.yaml | kubectl apply -f - >/dev/null

log "control plane ready: export KUBECONFIG=$KUBECONFIG  (kubectl get dockerclusters -A)"
log "starting the manager, webhooks on https://127.0.0.1:$LOCAL_WEBHOOK_PORT (Ctrl+C stops everything)"
log "probes: curl http://127.0.0.1:$LOCAL_HEALTH_PORT/readyz?verbose   metrics: curl http://127.0.0.1:$LOCAL_METRICS_PORT/metrics"
target/debug/manager --webhook-port="$LOCAL_WEBHOOK_PORT" --webhook-cert-dir="$certs" \
  --health-addr="127.0.0.1:$LOCAL_HEALTH_PORT" \
  --diagnostics-address="127.0.0.1:$LOCAL_METRICS_PORT" --insecure-diagnostics \
  --feature-gates="${CAPD_RS_FEATURE_GATES:-}" --privileged-nodes="${CAPD_RS_PRIVILEGED_NODES:-true}" &
pids+=($!)
wait -n "${pids[@]}"
