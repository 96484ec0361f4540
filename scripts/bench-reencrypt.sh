#!/usr/bin/env bash
# Benchmark: re-encrypting N secrets of 1 KiB from identity to aescbc, with what the Kubernetes
# docs tell admins to run (`kubectl get secrets -A -o json | kubectl replace -f -`) versus
# `atrest reencrypt`, in one run on the same cluster. Before each tool the state is reset the
# same way: identity config, delete every secret, seed N, switch to aescbc, restart the apiserver.
#
#   scripts/bench-reencrypt.sh [N=10000]
set -euo pipefail
N=${1:-10000}
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
setup
identity_config >"$work/identity.yaml"
aescbc_config >"$work/aescbc.yaml"
testbed_start "$work/identity.yaml"
flags=(--config "$ATREST_CONFIG" --endpoints "$ETCDCTL_ENDPOINTS" --kubeconfig "$KUBECONFIG" --state-dir "$work/state")

reset() {
  # Delete while the current config can still read every secret, then start from plaintext.
  kubectl delete --raw /api/v1/namespaces/bench/secrets >/dev/null 2>&1 || true  # deletecollection, server-side
  while [ "$(etcdctl get /registry/secrets/bench/ --prefix --count-only -w fields | awk '/"Count"/ {print $3}')" != "0" ]; do sleep 0.5; done
  cp "$work/identity.yaml" "$ATREST_CONFIG"
  testbed_restart_apiserver
  "$seed" "$KUBECONFIG" bench "$N" 1024 0
  cp "$work/aescbc.yaml" "$ATREST_CONFIG"
  testbed_restart_apiserver
  rm -rf "$work/state"
}

on_key1() {
  etcdctl get /registry/secrets/bench/ --prefix -w json | python3 -c '
import json,sys,base64
kvs=json.load(sys.stdin).get("kvs",[])
n=sum(1 for kv in kvs if base64.b64decode(kv["value"]).startswith(b"k8s:enc:aescbc:v1:key1:"))
print(n, len(kvs))'
}

echo "== kubectl get secrets -A -o json | kubectl replace -f -" >&2
reset
kubectl_line=$(NO_WARMUP=1 measure "kubectl-get-replace" 1 sh -c "kubectl get secrets -A -o json | kubectl replace -f -")
echo "$kubectl_line; on key1 / total: $(on_key1)" >&2

echo "== atrest reencrypt" >&2
reset
atrest_line=$(NO_WARMUP=1 measure "atrest-reencrypt" 1 "$atrest" reencrypt "${flags[@]}")
echo "$atrest_line; on key1 / total: $(on_key1)" >&2
cat "$work/stdout" >&2

echo "== re-run on the finished state, and a scan of it" >&2
rerun_line=$(measure "atrest-reencrypt-rerun" 3 "$atrest" reencrypt "${flags[@]}")
scan_line=$(measure "atrest-scan" 3 "$atrest" scan --config "$ATREST_CONFIG" --endpoints "$ETCDCTL_ENDPOINTS")

printf '%s\n%s\n%s\n%s\n' "$kubectl_line" "$atrest_line" "$rerun_line" "$scan_line" | awk -v n="$N" '
  { label[NR]=$1; t[NR]=$2; rss[NR]=$3; if ($1=="kubectl-get-replace") base=$2 }
  END {
    printf "\n%d secrets of 1 KiB, identity -> aescbc:\n", n
    printf "| command | wall s | speed-up vs kubectl | peak RSS MiB |\n|---|---:|---:|---:|\n"
    for (i=1;i<=NR;i++) printf "| %s | %.2f | %.1fx | %.1f |\n", label[i], t[i], (t[i]>0? base/t[i] : 0), rss[i]/1024
  }'
