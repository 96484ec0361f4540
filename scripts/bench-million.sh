#!/usr/bin/env bash
# Benchmark: every read-side command of atrest at N (default 1,000,000) small secrets, against
# `etcdctl get --prefix -w protobuf` on the same data, with peak RSS. The secrets are written
# straight into etcd in the apiserver's storage format (protobuf, plaintext) by
# examples/seed_etcd.rs, since a million through the API would take too long; the config is
# aescbc, so every one of them is a finding (plaintext where encryption is configured).
#
#   scripts/bench-million.sh [--resources K] [N=1000000] [RUNS=1]
#                                                      (--resources K: the N objects spread over
#                                                       K resources — secrets, configmaps and
#                                                       K-2 custom resources no CRD serves — and
#                                                       compared with reading all of /registry;
#                                                       SKIP_REENCRYPT=1: not the real run;
#                                                       PAGE_SWEEP="1000 5000": dry runs per page size;
#                                                       BASELINE=path/to/atrest: also that build's
#                                                       scan and dry run, for a before/after;
#                                                       PROFILE=1: CPU profiles of kube-apiserver
#                                                       and etcd over 30 s of the real run,
#                                                       PROFILE_DELAY s after it starts)
#
# Last, `atrest reencrypt` itself, once: every secret rewritten through the apiserver, and the
# size of the checkpoint it leaves.
set -euo pipefail
K=1
if [ "${1:-}" = --resources ]; then
  K=$2
  shift 2
  [ "$K" -ge 2 ] || { echo "--resources needs at least 2 (secrets and configmaps)" >&2; exit 2; }
fi
N=${1:-1000000}
RUNS=${2:-1}
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
setup
cargo build --release --quiet --example seed_etcd
aescbc_config >"$work/config.yaml"
if [ -n "${PROFILE:-}" ]; then
  export ATREST_APISERVER_EXTRA_ARGS=--profiling=true ATREST_ETCD_EXTRA_ARGS=--enable-pprof
fi
testbed_start "$work/config.yaml"
# What is read: the secrets alone, or every resource (the census) with --resources.
read_prefix=/registry/secrets
if [ "$K" = 1 ]; then
  "$root/target/release/examples/seed_etcd" "$ETCDCTL_ENDPOINTS" million "$N" 64
else
  read_prefix=/registry
  segments=(secrets configmaps)
  for i in $(seq -w 1 $((K - 2))); do segments+=("million$i.example.com/things"); done
  for seg in "${segments[@]}"; do
    "$root/target/release/examples/seed_etcd" "$ETCDCTL_ENDPOINTS" million $((N / K)) 64 /registry "$seg"
  done
fi
etcdctl --command-timeout=600s get "$read_prefix" --prefix --count-only -w fields | grep -i count >&2

flags=(--config "$ATREST_CONFIG" --endpoints "$ETCDCTL_ENDPOINTS")
# Every secret is plaintext under an aescbc config: scan, status and report exit 1 (findings).
export MEASURE_OK_EXIT=1
api=(--kubeconfig "$KUBECONFIG" --state-dir "$work/state")
{
  measure "etcdctl-get-prefix-protobuf" "$RUNS" sh -c "etcdctl --command-timeout=600s get $read_prefix --prefix -w protobuf > /dev/null"
  # What etcd spends counting the range once: every paged read pays it for the rest of the range.
  measure "etcdctl-count-only" "$RUNS" sh -c "etcdctl --command-timeout=600s get $read_prefix --prefix --count-only -w fields > /dev/null"
  measure "atrest-scan" "$RUNS" "$atrest" scan "${flags[@]}" --progress none
  if [ -n "${BASELINE:-}" ]; then
    measure "baseline-atrest-scan" "$RUNS" "$BASELINE" scan "${flags[@]}" --progress none
    measure "baseline-atrest-reencrypt-dry-run" "$RUNS" "$BASELINE" reencrypt --dry-run "${flags[@]}" "${api[@]}" --progress none
  fi
  measure "atrest-scan-verify" "$RUNS" "$atrest" scan --verify "${flags[@]}" --progress none
  measure "atrest-status" "$RUNS" "$atrest" status "${flags[@]}" "${api[@]}"
  measure "atrest-report-json" "$RUNS" "$atrest" report --format json "${flags[@]}" "${api[@]}"
  measure "atrest-reencrypt-dry-run" "$RUNS" "$atrest" reencrypt --dry-run "${flags[@]}" "${api[@]}" --progress none
  # PAGE_SWEEP="1000 5000 20000": the dry run's read at those page sizes (etcd counts the rest
  # of the range for every page: time against memory).
  for p in ${PAGE_SWEEP:-}; do
    measure "atrest-reencrypt-dry-run-page-$p" "$RUNS" "$atrest" reencrypt --dry-run --page-keys "$p" "${flags[@]}" "${api[@]}" --progress none
  done
  # The real run, once (it changes what the rows above would measure): every secret through the
  # apiserver, then etcd read again as the proof.
  if [ -z "${SKIP_REENCRYPT:-}" ]; then
    # Where the time goes: CPU seconds of etcd, kube-apiserver and atrest over the run.
    etcd0=$(cpu_of etcd) api0=$(cpu_of kube-apiserver)
    profiles=""
    if [ -n "${PROFILE:-}" ]; then
      (
        sleep "${PROFILE_DELAY:-0}"
        kubectl get --raw "/debug/pprof/profile?seconds=30" >"$work/apiserver.pprof" &
        curl -sf -o "$work/etcd.pprof" "$ETCDCTL_ENDPOINTS/debug/pprof/profile?seconds=30"
        wait
        # Printed at once (a long run may be stopped once they are out).
        for f in apiserver etcd; do
          echo "$f CPU profile, 30 s of the run from ${PROFILE_DELAY:-0} s (go tool pprof -top -cum):" >&2
          go tool pprof -top -cum -nodecount=40 "$work/$f.pprof" >&2 2>/dev/null || echo "(no $f profile)" >&2
        done
      ) &
      profiles=$!
    fi
    NO_WARMUP=1 MEASURE_OK_EXIT=0 measure "atrest-reencrypt" 1 "$atrest" reencrypt "${flags[@]}" "${api[@]}" --progress none
    [ -z "$profiles" ] || wait "$profiles" || true
    awk -v n="$N" -v e0="$etcd0" -v e1="$(cpu_of etcd)" -v a0="$api0" -v a1="$(cpu_of kube-apiserver)" -v at="$(cat "$work/cpu")" \
      'BEGIN { printf "reencrypt CPU: etcd %.1f s (%.3f ms/object), kube-apiserver %.1f s (%.3f ms/object), atrest %.1f s (%.3f ms/object)\n", e1-e0, 1000*(e1-e0)/n, a1-a0, 1000*(a1-a0)/n, at, 1000*at/n }' >&2
  fi
} | tee "$work/results.txt" >&2
[ -n "${SKIP_REENCRYPT:-}" ] || {
  tail -3 "$work/stdout" >&2
  echo "checkpoint after reencrypt: $(stat -c %s "$work/state/reencrypt-checkpoint.json") bytes" >&2
}

awk -v n="$N" -v k="$K" -v p="$read_prefix" '
  { label[NR]=$1; t[NR]=$2; rss[NR]=$3; if ($4 > 0) label[NR]=$1 " (FAILED: exit " $4 ")"; if ($1=="etcdctl-get-prefix-protobuf") base=$2 }
  END {
    printf "\n%d objects of 64 B of data over %d resources (plaintext protobuf, config aescbc for secrets):\n", n, k
    printf "| command | wall s | vs etcdctl get %s --prefix | peak RSS MiB |\n|---|---:|---:|---:|\n", p
    for (i=1;i<=NR;i++) printf "| %s | %.2f | %.2f | %.1f |\n", label[i], t[i], (base>0? t[i]/base : 0), rss[i]/1024
  }' "$work/results.txt"
