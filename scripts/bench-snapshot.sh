#!/usr/bin/env bash
# Benchmark: `atrest scan --snapshot` (offline, read-only) against what an admin would otherwise
# do to read a backup (`etcdutl snapshot restore` + start an etcd on it + `etcdctl get --prefix`),
# and against the machine's ceiling for the same file (one sequential read: `cat FILE`; and
# `sha256sum FILE`, since atrest also hashes the whole file for the report), in one
# run on the same snapshot. Seeds N secrets of 1 KiB through the real apiserver under aescbc,
# takes `etcdctl snapshot save`, and prints wall-time ratios and peak RSS.
#
#   scripts/bench-snapshot.sh [N=100000] [RUNS=3]
#
# SEED_DIRECT=1 writes the N secrets (64 bytes of data, plaintext protobuf) straight into etcd
# with examples/seed_etcd.rs instead, for millions: the apiserver would take hours.
set -euo pipefail
N=${1:-100000}
RUNS=${2:-3}
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
if [ -n "${SEED_DIRECT:-}" ]; then
  setup
  cargo build --release --quiet --example seed_etcd
  aescbc_config >"$work/config.yaml"
  testbed_start "$work/config.yaml"
  "$root/target/release/examples/seed_etcd" "$ETCDCTL_ENDPOINTS" bench "$N" 64
  # Plaintext under an aescbc config: every scan exits 1 (findings), timed like any run.
  export MEASURE_OK_EXIT=1
else
  seeded_cluster "$N"
fi
snap=$work/snapshot.db
etcdctl snapshot save "$snap" >/dev/null
ls -l "$snap" >&2

# What a user would do without atrest: restore into a data folder, start etcd on it, read
# every secret, stop it.
restore_and_read() {
  local dir=$work/restored port=$((30000 + RANDOM % 20000))
  rm -rf "$dir"
  etcdutl snapshot restore "$snap" --data-dir "$dir" >/dev/null 2>&1
  etcd --name restored --data-dir "$dir" \
    --listen-client-urls "http://127.0.0.1:$port" --advertise-client-urls "http://127.0.0.1:$port" \
    --listen-peer-urls "http://127.0.0.1:$((port + 1))" \
    --initial-advertise-peer-urls "http://127.0.0.1:$((port + 1))" \
    --initial-cluster "restored=http://127.0.0.1:$((port + 1))" >"$work/restored.log" 2>&1 &
  local pid=$! tries=0
  # The test bed's ETCDCTL_* point at the live etcd; this read is of the restored one.
  until ETCDCTL_ENDPOINTS="127.0.0.1:$port" etcdctl endpoint health >/dev/null 2>&1; do
    tries=$((tries + 1))
    [ $tries -lt 1200 ] || { echo "restored etcd did not start: $(tail -3 "$work/restored.log")" >&2; kill $pid; return 1; }
    sleep 0.05
  done
  ETCDCTL_ENDPOINTS="127.0.0.1:$port" etcdctl --command-timeout=600s get /registry/secrets --prefix -w protobuf >/dev/null
  kill $pid
  wait $pid 2>/dev/null || true
}
export -f restore_and_read
export work snap

flags=(--config "$ATREST_CONFIG" --snapshot "$snap")
{
  measure "restore+etcd+etcdctl-get" "$RUNS" bash -c restore_and_read
  measure "cat-file(ceiling)" "$RUNS" sh -c "cat '$snap' > /dev/null"
  measure "sha256sum-file" "$RUNS" sha256sum "$snap"
  measure "atrest-scan-snapshot" "$RUNS" "$atrest" scan "${flags[@]}" --progress none
  measure "atrest-scan-snapshot-verify" "$RUNS" "$atrest" scan "${flags[@]}" --verify --progress none
  measure "atrest-scan-snapshot-history" "$RUNS" "$atrest" scan "${flags[@]}" --history --progress none
} | tee "$work/results.txt" >&2

size=$(stat -c %s "$snap")
awk -v n="$N" -v size="$size" '
  { label[NR]=$1; t[NR]=$2; rss[NR]=$3; if ($4 > 0) label[NR]=$1 " (FAILED: exit " $4 ")"
    if ($1=="restore+etcd+etcdctl-get") base=$2
    if ($1=="cat-file(ceiling)") ceil=$2 }
  END {
    printf "\n%d secrets, snapshot of %.1f MiB, median of runs:\n", n, size/1048576
    printf "| command | wall s | speed-up vs restore+read | vs ceiling (cat) | peak RSS MiB |\n|---|---:|---:|---:|---:|\n"
    for (i=1;i<=NR;i++) printf "| %s | %.2f | %.1fx | %.1fx | %.1f |\n", label[i], t[i], (t[i]>0? base/t[i] : 0), (ceil>0? t[i]/ceil : 0), rss[i]/1024
  }' "$work/results.txt"
