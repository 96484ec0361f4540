#!/usr/bin/env bash
# Benchmark: re-encrypting N secrets of 1 KiB from identity to aescbc, with what the Kubernetes
# docs tell admins to run (`kubectl get secrets -A -o json | kubectl replace -f -`) versus
# `atrest reencrypt`, in one run on the same cluster. Before each tool the state is reset the
# same way: identity config, delete every secret, seed N, switch to aescbc, restart the apiserver.
#
# The ceiling, in the same run: examples/ceiling.rs, the cheapest client the apiserver allows
# (protobuf LIST, each item PUT back unchanged as protobuf with its resourceVersion), at the
# concurrencies of CONCURRENCIES; atrest runs at the same ones, alternating with it, each after a
# key rotation, ROUNDS (3) times, and atrest with `--request patch` (the merge PATCH only). The summary is atrest's best median as a fraction of the
# ceiling's best median.
#
#   scripts/bench-reencrypt.sh [N=10000]
#   CONCURRENCIES="8 16 32 64" TASKSET_CPUS=0 scripts/bench-reencrypt.sh
#
# TASKSET_CPUS pins the control plane (etcd and kube-apiserver) to those CPUs (taskset -a -p),
# to see how the ratios move with the cores the control plane gets.
#
# The engines (last): kube-controller-manager runs with the storage version migrator, and each
# of `reencrypt --engine svm` and atrest's own engine rewrites N secrets all stale, then N
# secrets of which 10% are stale (seeded under identity, then the rest under the write key).
# Each row gives its time and the writes etcd saw (revisions spent in namespace bench), with
# the ceiling (every secret PUT back once) on the all-stale state. ENGINES_ONLY=1 runs only
# this part.
set -euo pipefail
N=${1:-10000}
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
setup
identity_config >"$work/identity.yaml"
aescbc_config >"$work/aescbc.yaml"
ATREST_TESTBED_CONTROLLER_MANAGER=1 testbed_start "$work/identity.yaml"
cargo build --release --quiet --example ceiling
ceiling=$root/target/release/examples/ceiling
concurrencies=${CONCURRENCIES:-8 16 32 64}
pin_control_plane() {
  [ -n "${TASKSET_CPUS:-}" ] || return 0
  for p in $(pgrep -x etcd) $(pgrep -x kube-apiserver); do taskset -a -p -c "$TASKSET_CPUS" "$p" >/dev/null; done
}
pin_control_plane
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
  pin_control_plane
  rm -rf "$work/state"
}

# on_key NAME: "<secrets on aescbc key NAME> <secrets>" in namespace bench, from etcd.
on_key() {
  etcdctl get /registry/secrets/bench/ --prefix -w json | python3 -c '
import json,sys,base64
kvs=json.load(sys.stdin).get("kvs",[])
n=sum(1 for kv in kvs if base64.b64decode(kv["value"]).startswith(("k8s:enc:aescbc:v1:" + sys.argv[1] + ":").encode()))
print(n, len(kvs))' "$1"
}

if [ -z "${ENGINES_ONLY:-}" ]; then
echo "== kubectl get secrets -A -o json | kubectl replace -f -" >&2
reset
kubectl_line=$(NO_WARMUP=1 measure "kubectl-get-replace" 1 sh -c "kubectl get secrets -A -o json | kubectl replace -f -")
echo "$kubectl_line; on key1 / total: $(on_key key1)" >&2

lines=("$kubectl_line")
echo "== atrest reencrypt, identity -> aescbc as above" >&2
reset
line=$(NO_WARMUP=1 measure "atrest-reencrypt" 1 "$atrest" reencrypt "${flags[@]}")
echo "$line; on key1 / total: $(on_key key1)" >&2
cat "$work/stdout" >&2
lines+=("$line")

# The sweep: a key rotation before each run (a new write key, the previous one kept to read),
# so that every run rewrites all N, alternating the ceiling and atrest at each concurrency,
# ROUNDS times; the table shows each one's median.
key_n=1
prev_key=$(awk '/secret:/ {print $2; exit}' "$work/aescbc.yaml")
rotate_key() {
  local new
  new=$(head -c 32 /dev/urandom | base64)
  aescbc_config "key$((key_n + 1))" "$new" "key$key_n" "$prev_key" >"$ATREST_CONFIG"
  key_n=$((key_n + 1))
  prev_key=$new
  testbed_restart_apiserver
  pin_control_plane
  rm -rf "$work/state"
}
sweep=()
for round in $(seq 1 "${ROUNDS:-3}"); do
  for c in $concurrencies; do
    rotate_key
    line=$(NO_WARMUP=1 measure "ceiling-c$c" 1 "$ceiling" "$KUBECONFIG" bench "$c")
    echo "round $round: $line; $(cat "$work/stdout"); on key$key_n / total: $(on_key "key$key_n")" >&2
    sweep+=("$line")
    rotate_key
    line=$(NO_WARMUP=1 measure "atrest-reencrypt-c$c" 1 "$atrest" reencrypt "${flags[@]}" --concurrency "$c")
    echo "round $round: $line; $(head -1 "$work/stdout"); on key$key_n / total: $(on_key "key$key_n")" >&2
    sweep+=("$line")
    # The merge PATCH atrest sends where the PUT does not apply, for comparison.
    rotate_key
    line=$(NO_WARMUP=1 measure "atrest-reencrypt-patch-c$c" 1 "$atrest" reencrypt "${flags[@]}" --concurrency "$c" --request patch)
    echo "round $round: $line; $(head -1 "$work/stdout"); on key$key_n / total: $(on_key "key$key_n")" >&2
    sweep+=("$line")
  done
done
# Medians per label, in the order first seen.
while read -r l; do lines+=("$l"); done < <(printf '%s\n' "${sweep[@]}" | awk '
  { if (!($1 in n)) order[++k]=$1; n[$1]++; t[$1, n[$1]]=$2; if ($3>rss[$1]) rss[$1]=$3 }
  END { for (i=1;i<=k;i++) { l=order[i]; m=n[l]
          for (a=1;a<=m;a++) v[a]=t[l,a]
          for (a=1;a<=m;a++) for (b=a+1;b<=m;b++) if (v[b]<v[a]) { x=v[a]; v[a]=v[b]; v[b]=x }
          print l, v[int((m+1)/2)], rss[l] } }')

fi
echo "== engines: StorageVersionMigration against atrest's own, all stale and 10% stale" >&2
# writes_since REV: revisions etcd spent on namespace bench's secrets after REV (each write of a
# secret is one revision; the apiserver's own leases are elsewhere).
writes_since() {
  etcdctl get /registry/secrets/bench/ --prefix -w json | python3 -c '
import json,sys
kvs=json.load(sys.stdin).get("kvs",[])
print(sum(1 for kv in kvs if int(kv["mod_revision"]) > int(sys.argv[1])))' "$1"
}
revision() { etcdctl get / --prefix --keys-only --limit 1 -w json | python3 -c 'import json,sys; print(json.load(sys.stdin)["header"]["revision"])'; }
# reset_partial PERCENT: N secrets, PERCENT of them plaintext (stale), the rest on key1.
reset_partial() {
  kubectl delete --raw /api/v1/namespaces/bench/secrets >/dev/null 2>&1 || true
  while [ "$(etcdctl get /registry/secrets/bench/ --prefix --count-only -w fields | awk '/"Count"/ {print $3}')" != "0" ]; do sleep 0.5; done
  local stale=$((N * $1 / 100))
  cp "$work/identity.yaml" "$ATREST_CONFIG"
  testbed_restart_apiserver
  "$seed" "$KUBECONFIG" bench "$stale" 1024 0
  cp "$work/aescbc.yaml" "$ATREST_CONFIG"
  testbed_restart_apiserver
  [ "$stale" -lt "$N" ] && "$seed" "$KUBECONFIG" bench "$((N - stale))" 1024 "$stale"
  pin_control_plane
  rm -rf "$work/state"
}
engine_rows=()
for pct in 100 10; do
  if [ "$pct" = 100 ]; then
    # The ceiling on the same state: every secret PUT back once, 16 in flight.
    reset_partial 100
    rev=$(revision)
    line=$(NO_WARMUP=1 measure "ceiling-c16-${pct}pct-stale" 1 "$ceiling" "$KUBECONFIG" bench 16)
    engine_rows+=("$line $(writes_since "$rev")")
  fi
  for engine in svm atrest; do
    reset_partial "$pct"
    rev=$(revision)
    line=$(NO_WARMUP=1 measure "engine-$engine-${pct}pct-stale" 1 "$atrest" reencrypt "${flags[@]}" --engine "$engine" --resource secrets)
    w=$(writes_since "$rev")
    echo "$line; writes $w; on key1 / total: $(on_key key1)" >&2
    engine_rows+=("$line $w")
  done
done

if [ -z "${ENGINES_ONLY:-}" ]; then
echo "== re-run on the finished state, and a scan of it" >&2
lines+=("$(measure "atrest-reencrypt-rerun" 3 "$atrest" reencrypt "${flags[@]}")")
lines+=("$(measure "atrest-scan" 3 "$atrest" scan --config "$ATREST_CONFIG" --endpoints "$ETCDCTL_ENDPOINTS")")

printf '%s\n' "${lines[@]}" | awk -v n="$N" -v cpus="${TASKSET_CPUS:-all}" '
  { label[NR]=$1; t[NR]=$2; rss[NR]=$3
    if ($1=="kubectl-get-replace") base=$2
    if ($1 ~ /^ceiling-/ && (ceil=="" || $2<ceil)) { ceil=$2; ceil_label=$1 }
    if ($1 ~ /^atrest-reencrypt-c/ && (best=="" || $2<best)) { best=$2; best_label=$1 }
    if ($1 ~ /^atrest-reencrypt-patch-c/ && (bestp=="" || $2<bestp)) bestp=$2 }
  END {
    printf "\n%d secrets of 1 KiB, control plane on CPUs %s (kubectl and the first atrest row: identity -> aescbc; the sweep: a key rotation each, median of the rounds):\n", n, cpus
    printf "| command | wall s | speed-up vs kubectl | peak RSS MiB |\n|---|---:|---:|---:|\n"
    for (i=1;i<=NR;i++) printf "| %s | %.2f | %.1fx | %.1f |\n", label[i], t[i], (t[i]>0? base/t[i] : 0), rss[i]/1024
    printf "\nceiling (best: %s) %.2f s; atrest (best: %s) %.2f s = %.1f%% of the ceiling\n", ceil_label, ceil, best_label, best, (best>0? 100*ceil/best : 0)
    if (bestp>0) printf "atrest --request patch (best) %.2f s = %.1f%% of the ceiling\n", bestp, 100*ceil/bestp
  }'
fi
printf '%s\n' "${engine_rows[@]}" | awk -v n="$N" '
  BEGIN { printf "\nengines, %d secrets (the migrator asks for every secret, the apiserver writes the stale ones):\n| engine, stale share | wall s | secrets written | peak RSS MiB |\n|---|---:|---:|---:|\n", n }
  { label=$1; if ($4 > 0) label=$1 " (FAILED: exit " $4 ")"; printf "| %s | %.2f | %d | %.1f |\n", label, $2, $5, $3/1024 }'
