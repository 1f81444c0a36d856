#!/usr/bin/env bash
# The main job: Cluster API on this machine, with capd-rs as its Docker infrastructure provider.
#
#   hack/run.sh                 a local control plane (etcd + kube-apiserver) as the management
#                               cluster; cert-manager; Cluster API's core, kubeadm bootstrap and
#                               kubeadm control-plane providers and capd-rs installed by
#                               `clusterctl init` from this checkout's release; every provider's
#                               manager run from its installed Deployment (examples/local_cluster.rs
#                               plays the kubelet); and a sample cluster from templates/.
#   hack/run.sh --manager-only  the local control plane with capd-rs's CRDs and webhooks and the
#                               manager from source, without Cluster API: the short inner loop.
#
# Ctrl+C stops everything. The control plane's data (and so the objects) and the containers are
# kept for the next run, in $CAPD_RS_CACHE/local (local-manager-only for --manager-only).
# The full run needs root (network namespaces for the managers, as Pods have) and builds
# clusterctl, Cluster API and cert-manager from the Go module proxy the first time (hack/tools.sh).
#
#   LOCAL_API_PORT            the apiserver's port on 127.0.0.1 (default 16443; etcd uses the next two)
#   LOCAL_STATE               the directory kept between runs (default: see above)
#   SAMPLE_CLUSTER            the sample cluster's name (default sample; empty for none)
#   SAMPLE_KUBERNETES_VERSION its Kubernetes version (default v1.34.8, a kind node image)
#   CAPD_RS_NODE_IMAGE        its node image (default: kind's for the version; the local test node
#                             image where privileged containers are refused)
#   CAPD_RS_PRIVILEGED_NODES  privileged node containers or not (default: detected)
# With --manager-only:
#   LOCAL_WEBHOOK_PORT        the manager's webhook port (default 9443)
#   LOCAL_HEALTH_PORT         /healthz and /readyz on 127.0.0.1 (default 9440)
#   LOCAL_METRICS_PORT        /metrics on 127.0.0.1, plain HTTP for local use (default 8443)
#   CAPD_RS_FEATURE_GATES     passed to the manager's --feature-gates (e.g. ClusterTopology=true)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/.."
source hack/lib.sh

mode=full
for arg in "$@"; do
  case $arg in
  --manager-only) mode=manager-only ;;
  *) die "unknown argument '$arg' (expected --manager-only)" ;;
  esac
done

: "${LOCAL_API_PORT:=16443}" "${LOCAL_WEBHOOK_PORT:=9443}" "${LOCAL_HEALTH_PORT:=9440}" "${LOCAL_METRICS_PORT:=8443}"
: "${SAMPLE_CLUSTER=sample}" "${SAMPLE_KUBERNETES_VERSION:=v1.34.8}"
etcd_port=$((LOCAL_API_PORT + 1)) etcd_peer_port=$((LOCAL_API_PORT + 2))
if [[ $mode == full ]]; then
  state="${LOCAL_STATE:-$CAPD_RS_CACHE/local}"
  [[ $(id -u) == 0 ]] || die "the full run needs root: it runs each provider's manager in a network namespace of its own,
as a Pod (ip netns). Run it as root, or run hack/run.sh --manager-only."
  bins=$(bash hack/setup.sh)
  log "building the manager and the management cluster's runner (examples/local_cluster.rs)"
  cargo build --quiet --bin manager --example local_cluster
else
  state="${LOCAL_STATE:-$CAPD_RS_CACHE/local-manager-only}"
  bins=$(bash hack/setup.sh --without-tools)
  log "building the manager"
  cargo build --quiet --bin manager
fi
mkdir -p "$state/certs"

if [[ ! -f "$state/sa.key" ]]; then
  openssl genrsa -out "$state/sa.key" 2048 2>/dev/null
  openssl rsa -in "$state/sa.key" -pubout -out "$state/sa.pub" 2>/dev/null
  echo "$(openssl rand -hex 16),admin,admin,system:masters" >"$state/tokens.csv"
fi
token=$(cut -d, -f1 "$state/tokens.csv")

# Stopped last started first, each waited for: the runner removes its Pods' EndpointSlices and
# network namespaces while the apiserver still answers.
pids=()
cleanup() {
  trap - EXIT INT TERM
  log "stopping"
  local i
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill "${pids[i]}" 2>/dev/null || true
    wait "${pids[i]}" 2>/dev/null || true
  done
}
trap cleanup EXIT INT TERM

ports=("$LOCAL_API_PORT" "$etcd_port" "$etcd_peer_port")
[[ $mode == manager-only ]] && ports+=("$LOCAL_WEBHOOK_PORT")
for port in "${ports[@]}"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    die "port $port on 127.0.0.1 is in use (another hack/run.sh?). Set LOCAL_API_PORT or LOCAL_WEBHOOK_PORT."
  fi
done

"$bins/etcd" --data-dir="$state/etcd" --listen-client-urls="http://127.0.0.1:$etcd_port" \
  --advertise-client-urls="http://127.0.0.1:$etcd_port" --listen-peer-urls="http://127.0.0.1:$etcd_peer_port" \
  >"$state/etcd.log" 2>&1 &
pids+=($!)
# Aggregator routing: webhooks installed behind Services are reached through their EndpointSlices
# (nothing here routes ClusterIPs).
"$bins/kube-apiserver" --etcd-servers="http://127.0.0.1:$etcd_port" --cert-dir="$state/certs" \
  --secure-port="$LOCAL_API_PORT" --bind-address=127.0.0.1 --advertise-address=127.0.0.1 \
  --service-cluster-ip-range=10.0.0.0/24 --allow-privileged=true --authorization-mode=RBAC \
  --token-auth-file="$state/tokens.csv" --service-account-issuer="https://127.0.0.1:$LOCAL_API_PORT" \
  --service-account-key-file="$state/sa.pub" --service-account-signing-key-file="$state/sa.key" \
  --disable-admission-plugins=ServiceAccount --enable-aggregator-routing=true \
  >"$state/kube-apiserver.log" 2>&1 &
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

# The default load-balancer image. Where no registry is reachable (air-gapped machines, CI),
# the local HAProxy test image stands in for it, so a default DockerCluster still works.
lb_image=kindest/haproxy:v20230606-42a2262b
if ! docker image inspect "$lb_image" >/dev/null 2>&1 && ! timeout 120 docker pull -q "$lb_image" >/dev/null 2>&1; then
  docker tag capd-rs-test/haproxy:local "$lb_image"
  log "cannot pull $lb_image: tagged the local capd-rs-test/haproxy:local as $lb_image"
fi

# Privileged node containers, unless this engine refuses them (a missing capability in its
# bounding set, say): then nodes are made without --privileged.
if [[ -z "${CAPD_RS_PRIVILEGED_NODES:-}" ]]; then
  CAPD_RS_PRIVILEGED_NODES=true
  if ! refusal=$(docker run --rm --privileged --entrypoint true capd-rs-test/node:local 2>&1); then
    docker run --rm --entrypoint true capd-rs-test/node:local >/dev/null 2>&1 ||
      die "the Docker engine cannot run the local test node image: $refusal"
    CAPD_RS_PRIVILEGED_NODES=false
    log "this Docker engine refuses privileged containers (${refusal%%$'\n'*}): node containers are made without --privileged"
  fi
fi
export CAPD_RS_PRIVILEGED_NODES

if [[ $mode == full ]]; then
  if [[ $CAPD_RS_PRIVILEGED_NODES == false && -z "${CAPD_RS_NODE_IMAGE:-}" ]]; then
    CAPD_RS_NODE_IMAGE=capd-rs-test/node:local
    log "the sample cluster uses the local test node image $CAPD_RS_NODE_IMAGE (kind's images need privileged containers)"
  fi
  # Webhook configurations a --manager-only run left here (before it had a state of its own)
  # would send every request to a manager that no longer runs.
  kubectl delete mutatingwebhookconfiguration,validatingwebhookconfiguration --ignore-not-found \
    capd-rs-local-mutating-webhook-configuration capd-rs-local-validating-webhook-configuration >/dev/null
  export LOCAL_KUBECONFIG="$KUBECONFIG" LOCAL_STATE="$state" SAMPLE_CLUSTER SAMPLE_KUBERNETES_VERSION
  export CAPD_RS_NODE_IMAGE="${CAPD_RS_NODE_IMAGE:-}"
  target/debug/examples/local_cluster &
  pids+=($!)
  wait -n "${pids[@]}"
  exit
fi

kubectl apply --server-side -f config/crd/bases >/dev/null
if ! kubectl get crd clusters.cluster.x-k8s.io >/dev/null 2>&1; then
  # No core Cluster API here: minimal Cluster/Machine CRDs let you play its part by hand.
  kubectl apply --server-side -f hack/capi-crds.yaml >/dev/null
fi
kubectl wait --for=condition=Established crd --all --timeout=60s >/dev/null

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
  --feature-gates="${CAPD_RS_FEATURE_GATES:-}" --privileged-nodes="$CAPD_RS_PRIVILEGED_NODES" &
pids+=($!)
wait -n "${pids[@]}"
