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

status() {
  # Only the manifest: the config path, etcd endpoints and prefix are discovered from it.
  env -u ATREST_CONFIG -u ETCDCTL_ENDPOINTS -u KUBECONFIG "$atrest" status --apiserver-manifest "$ATREST_APISERVER_MANIFEST" "$@" || true
}

say "atrest status before: settings from the apiserver manifest, secrets stored as plaintext"
status

say "turning encryption on: aescbc key1 first, identity kept to read what is stored"
key_entry=$("$atrest" keys generate --provider aescbc --name key1 | grep -v '^#')
{
  printf 'apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n      - aescbc:\n          keys:\n'
  printf '%s\n' "$key_entry" | sed 's/^/            /'
  printf '      - identity: {}\n'
} >"$ATREST_CONFIG.new"
mv "$ATREST_CONFIG.new" "$ATREST_CONFIG"
"$atrest" config check --config "$ATREST_CONFIG" || true
restarts_before=$(cat "$work/env.restarts" 2>/dev/null | wc -l)
kill -HUP "$testbed"   # the test bed restarts kube-apiserver, which loads the new file at once
for _ in $(seq 1 600); do
  [ "$(cat "$work/env.restarts" 2>/dev/null | wc -l)" -gt "$restarts_before" ] && break
  sleep 0.1
done

say "atrest reencrypt: rewrite, through the apiserver, what etcd shows is not on the write key"
"$atrest" reencrypt --config "$ATREST_CONFIG" --endpoints "$ETCDCTL_ENDPOINTS" --kubeconfig "$KUBECONFIG" --state-dir "$work/state"

say "what etcd stores for demo/s-1 now"
etcdctl get /registry/secrets/demo/s-1 --print-value-only | head -c 48 | od -An -c | head -2

say "atrest status after"
status
