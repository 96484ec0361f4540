#!/usr/bin/env bash
# Benchmark: `atrest scan` against what an admin would otherwise run (etcdctl), in one run on the
# same cluster state. Seeds N secrets of 1 KiB through the real apiserver under aescbc, measures
# at SMALL and at N secrets, and prints wall-time ratios and peak RSS.
#
#   scripts/bench-scan.sh [N=100000] [SMALL=10000] [RUNS=3]
set -euo pipefail
N=${1:-100000}
SMALL=${2:-10000}
RUNS=${3:-3}
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
setup
aescbc_config >"$work/config.yaml"
testbed_start "$work/config.yaml"
flags=(--config "$ATREST_CONFIG" --endpoints "$ETCDCTL_ENDPOINTS")

run_all() {
  local n=$1
  measure "etcdctl-get-prefix-protobuf" "$RUNS" sh -c "etcdctl get /registry/secrets --prefix -w protobuf > /dev/null"
  measure "etcdctl-get-prefix-keys-only" "$RUNS" sh -c "etcdctl get /registry/secrets --prefix --keys-only > /dev/null"
  measure "atrest-scan" "$RUNS" "$atrest" scan "${flags[@]}"
  measure "atrest-scan-verify" "$RUNS" "$atrest" scan --verify "${flags[@]}"
}

report() {
  local n=$1 file=$2
  awk -v n="$n" '
    { label[NR]=$1; t[NR]=$2; rss[NR]=$3; if ($1=="etcdctl-get-prefix-protobuf") base=$2 }
    END {
      printf "\n%d secrets of 1 KiB (aescbc), median of runs:\n", n
      printf "| command | wall s | vs etcdctl full read | peak RSS MiB |\n|---|---:|---:|---:|\n"
      for (i=1;i<=NR;i++) printf "| %s | %.2f | %.2f | %.1f |\n", label[i], t[i], (base>0? t[i]/base : 0), rss[i]/1024
    }' "$file"
}

echo "seeding $SMALL secrets" >&2
"$seed" "$KUBECONFIG" bench "$SMALL" 1024 0
"$atrest" scan "${flags[@]}" --resource secrets | head -5 >&2 || true
run_all "$SMALL" | tee "$work/small.txt" >&2
if [ "$N" -gt "$SMALL" ]; then
  echo "seeding up to $N secrets" >&2
  "$seed" "$KUBECONFIG" bench "$((N - SMALL))" 1024 "$SMALL"
  run_all "$N" | tee "$work/large.txt" >&2
fi
report "$SMALL" "$work/small.txt"
[ -f "$work/large.txt" ] && report "$N" "$work/large.txt"
