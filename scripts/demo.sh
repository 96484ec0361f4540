#!/usr/bin/env bash
# The main job of atrest on a local control plane it starts itself (real etcd + kube-apiserver,
# built from their Go modules): secrets written as plaintext, proven in etcd, then shown by
# `atrest status`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

command -v protoc >/dev/null || {
  sudo_cmd=""; [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq protobuf-compiler >/dev/null
}

say "building the Kubernetes binaries (cached) and atrest"
bins=$(scripts/k8s/build.sh)
cargo build --release --quiet --bin atrest --example testbed
atrest=$root/target/release/atrest
export PATH=$bins:$PATH

work=$(mktemp -d -t atrest-demo.XXXXXX)
say "starting etcd and kube-apiserver (work folder $work)"
"$root/target/release/examples/testbed" "$work/env" >"$work/testbed.log" 2>&1 &
testbed=$!
trap 'kill $testbed 2>/dev/null; wait $testbed 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 1 300); do
  [ -f "$work/env" ] && break
  kill -0 $testbed 2>/dev/null || { cat "$work/testbed.log"; exit 1; }
  sleep 0.2
done
# shellcheck disable=SC1091
source "$work/env"
echo "apiserver $ATREST_APISERVER_URL, etcd $ETCDCTL_ENDPOINTS"

count=${DEMO_SECRETS:-20}
say "creating $count secrets through the API (the config says identity: plaintext)"
kubectl create namespace demo >/dev/null
for i in $(seq 1 "$count"); do
  printf 'apiVersion: v1\nkind: Secret\nmetadata:\n  name: s-%d\n  namespace: demo\nstringData:\n  password: demo-%d\n---\n' "$i" "$i"
done | kubectl apply -f - >/dev/null
kubectl get secrets -n demo --no-headers | wc -l | xargs echo "secrets in namespace demo:"

say "what etcd stores for demo/s-1 (first bytes, read with etcdctl)"
etcdctl get /registry/secrets/demo/s-1 --print-value-only | head -c 48 | od -An -c | head -3

say "atrest status (settings from the apiserver manifest)"
# Only the manifest: the config path, etcd endpoints and prefix are discovered from it.
env -u ATREST_CONFIG -u ETCDCTL_ENDPOINTS -u KUBECONFIG "$atrest" status --apiserver-manifest "$ATREST_APISERVER_MANIFEST" || true
