#!/usr/bin/env bash
# Benchmark: `atrest scan --history` against `atrest scan` on the same state — N secrets
# (default 100,000), each written once and rewritten once, a revision per write as the
# apiserver makes them (seeded straight into etcd in its storage format by
# examples/seed_etcd.rs with SEED_TXN=1) — and against `etcdctl get --prefix -w protobuf`, with
# peak RSS. History holds N older values: every one is counted (and proven below against etcd).
#
#   scripts/bench-history.sh [N=100000] [RUNS=3]     (BASELINE=path/to/atrest: that build too)
set -euo pipefail
N=${1:-100000}
RUNS=${2:-3}
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
setup
cargo build --release --quiet --example seed_etcd
aescbc_config >"$work/config.yaml"
# The apiserver's 5-minute compaction would drop the history being measured.
export ATREST_APISERVER_EXTRA_ARGS=--etcd-compaction-interval=0
testbed_start "$work/config.yaml"
for pass in write rewrite; do
  SEED_TXN=1 "$root/target/release/examples/seed_etcd" "$ETCDCTL_ENDPOINTS" history "$N" 64 2>&1 | sed "s/^/$pass: /" >&2
done

flags=(--config "$ATREST_CONFIG" --endpoints "$ETCDCTL_ENDPOINTS" --state-dir "$work/state" --progress none)
unset KUBECONFIG
# Plaintext under an aescbc config: a finding (exit 1), timed like any run.
export MEASURE_OK_EXIT=1
{
  measure "etcdctl-get-prefix-protobuf" "$RUNS" sh -c "etcdctl --command-timeout=600s get /registry/secrets --prefix -w protobuf > /dev/null"
  measure "atrest-scan" "$RUNS" "$atrest" scan "${flags[@]}"
  measure "atrest-scan-history" "$RUNS" "$atrest" scan --history "${flags[@]}"
  if [ -n "${BASELINE:-}" ]; then
    measure "baseline-atrest-scan-history" "$RUNS" "$BASELINE" scan --history "${flags[@]}"
  fi
} | tee "$work/results.txt" >&2

# Exact: the older values atrest counts under history/ against etcd's own count (every key
# was rewritten once, so etcd keeps one older revision of each: the count at the revision
# before the rewrite pass began equals N).
"$atrest" scan --history "${flags[@]}" -o json >"$work/scan.json" || true
python3 - "$work/scan.json" "$N" <<'PY'
import json, sys
scan, n = json.load(open(sys.argv[1])), int(sys.argv[2])
h = scan["history"]
got = sum(g["values"] for g in h["groups"] if g["resource"] == "secrets")
print(f"history: {got} older secret values counted, {n} written over: {got == n}", file=sys.stderr)
sys.exit(0 if got == n else 1)
PY

awk -v n="$N" '
  { label[NR]=$1; t[NR]=$2; rss[NR]=$3; if ($4 > 0) label[NR]=$1 " (FAILED: exit " $4 ")"; if ($1=="atrest-scan") base=$2; if ($1=="etcdctl-get-prefix-protobuf") e=$2 }
  END {
    printf "\n%d secrets of 64 B, each written and rewritten once (%d revisions in history):\n", n, 2*n
    printf "| command | wall s | vs atrest scan | vs etcdctl get --prefix | peak RSS MiB |\n|---|---:|---:|---:|---:|\n"
    for (i=1;i<=NR;i++) printf "| %s | %.2f | %.2f | %.2f | %.1f |\n", label[i], t[i], (base>0? t[i]/base : 0), (e>0? t[i]/e : 0), rss[i]/1024
  }' "$work/results.txt"
