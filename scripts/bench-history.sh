#!/usr/bin/env bash
# Benchmark: `atrest scan --history` against `atrest scan` on the same state — N secrets
# (default 100,000), each written once and rewritten once, a revision per write as the
# apiserver makes them (seeded straight into etcd in its storage format by
# examples/seed_etcd.rs with SEED_TXN=1) — and against `etcdctl get --prefix -w protobuf`, with
# peak RSS. History holds N older values: every one is counted (and proven below against etcd).
#
#   scripts/bench-history.sh [N=100000] [RUNS=3]     (BASELINE=path/to/atrest: that build too)
#
# Each row also gives the CPU seconds etcd and atrest spent per run (etcd's from /proc, over
# the warm-up and every run). PROFILE=1 starts etcd with --enable-pprof and prints the top of
# its CPU profile over 20 s of back-to-back scans, then of back-to-back history reads.
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
[ -z "${PROFILE:-}" ] || export ATREST_ETCD_EXTRA_ARGS=--enable-pprof
testbed_start "$work/config.yaml"
for pass in write rewrite; do
  SEED_TXN=1 "$root/target/release/examples/seed_etcd" "$ETCDCTL_ENDPOINTS" history "$N" 64 2>&1 | sed "s/^/$pass: /" >&2
done

flags=(--config "$ATREST_CONFIG" --endpoints "$ETCDCTL_ENDPOINTS" --state-dir "$work/state" --progress none)
unset KUBECONFIG
# Plaintext under an aescbc config: a finding (exit 1), timed like any run.
export MEASURE_OK_EXIT=1
# with_cpu LABEL CMD...: measure, then etcd's CPU seconds per run and the command's own (last run).
with_cpu() {
  local label=$1 e0 line
  shift
  e0=$(cpu_of etcd)
  line=$(measure "$label" "$RUNS" "$@")
  echo "$line $(awk -v a="$e0" -v b="$(cpu_of etcd)" -v n="$RUNS" 'BEGIN {printf "%.2f", (b - a) / (n + 1)}') $(cat "$work/cpu")"
}
{
  with_cpu "etcdctl-get-prefix-protobuf" sh -c "etcdctl --command-timeout=600s get /registry/secrets --prefix -w protobuf > /dev/null"
  with_cpu "atrest-scan" "$atrest" scan "${flags[@]}"
  with_cpu "atrest-scan-history" "$atrest" scan --history "${flags[@]}"
  if [ -n "${BASELINE:-}" ]; then
    with_cpu "baseline-atrest-scan-history" "$BASELINE" scan --history "${flags[@]}"
  fi
} | tee "$work/results.txt" >&2

# profile LABEL CMD...: etcd's CPU profile over 20 s of CMD run back to back, its top printed.
profile() {
  local label=$1 end
  shift
  curl -sf -o "$work/$label.pprof" "$ETCDCTL_ENDPOINTS/debug/pprof/profile?seconds=20" &
  local pid=$!
  end=$((SECONDS + 20))
  while [ $SECONDS -lt $end ]; do "$@" >/dev/null 2>&1 || true; done
  wait $pid
  echo "etcd CPU profile, $label run back to back for 20 s (go tool pprof -top -cum):" >&2
  go tool pprof -top -cum -nodecount=40 "$work/$label.pprof" >&2 2>/dev/null
}
if [ -n "${PROFILE:-}" ]; then
  profile scan "$atrest" scan "${flags[@]}"
  profile history "$atrest" scan --history "${flags[@]}"
fi

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
  { label[NR]=$1; t[NR]=$2; rss[NR]=$3; ecpu[NR]=$5; own[NR]=$6; if ($4 > 0) label[NR]=$1 " (FAILED: exit " $4 ")"; if ($1=="atrest-scan") base=$2; if ($1=="etcdctl-get-prefix-protobuf") e=$2 }
  END {
    printf "\n%d secrets of 64 B, each written and rewritten once (%d revisions in history):\n", n, 2*n
    printf "| command | wall s | vs atrest scan | vs etcdctl get --prefix | etcd CPU s | own CPU s | peak RSS MiB |\n|---|---:|---:|---:|---:|---:|---:|\n"
    for (i=1;i<=NR;i++) printf "| %s | %.2f | %.2f | %.2f | %.2f | %.2f | %.1f |\n", label[i], t[i], (base>0? t[i]/base : 0), (e>0? t[i]/e : 0), ecpu[i], own[i], rss[i]/1024
  }' "$work/results.txt"
