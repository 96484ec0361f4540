#!/usr/bin/env bash
# Benchmark: the census (every resource etcd holds, not only those the config names) at N
# objects (default 100,000) spread over 20 resources — secrets, configmaps and 18 custom
# resources (no CRD serves them, so the apiserver does not try to cache objects seeded behind
# its back) — against what an admin would otherwise run to read them: `etcdctl get /registry
# --prefix -w protobuf` (every value) and `--keys-only`, with peak RSS. The objects are written
# straight into etcd in the apiserver's storage format (plaintext protobuf) by
# examples/seed_etcd.rs; the config encrypts secrets only, so the rest is counted and judged as
# plaintext the config leaves unencrypted (and searched for secret-looking data). atrest runs
# without a kubeconfig, as etcdctl does: the apiservers are not asked.
#
#   scripts/bench-census.sh [N=100000] [RUNS=3]
#
# It also proves the counts: atrest's per-resource totals against `etcdctl --count-only` of
# each resource's prefix, at the revision the scan read.
set -euo pipefail
N=${1:-100000}
RUNS=${2:-3}
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
setup
cargo build --release --quiet --example seed_etcd
aescbc_config >"$work/config.yaml"
testbed_start "$work/config.yaml"

# key segment -> the resource atrest names it by
segments=(secrets configmaps)
for i in $(seq -w 1 18); do segments+=("census$i.example.com/things"); done
per=$((N / ${#segments[@]}))
for seg in "${segments[@]}"; do
  "$root/target/release/examples/seed_etcd" "$ETCDCTL_ENDPOINTS" census "$per" 256 /registry "$seg" 2>/dev/null
done
echo "seeded $((per * ${#segments[@]})) objects over ${#segments[@]} resources" >&2

flags=(--config "$ATREST_CONFIG" --endpoints "$ETCDCTL_ENDPOINTS" --state-dir "$work/state")
unset KUBECONFIG
# The secrets are plaintext under an aescbc config: a finding (exit 1), timed like any run.
export MEASURE_OK_EXIT=1
{
  measure "etcdctl-get-registry-protobuf" "$RUNS" sh -c "etcdctl --command-timeout=600s get /registry --prefix -w protobuf > /dev/null"
  measure "etcdctl-get-registry-keys-only" "$RUNS" sh -c "etcdctl --command-timeout=600s get /registry --prefix --keys-only > /dev/null"
  measure "atrest-scan" "$RUNS" "$atrest" scan "${flags[@]}" --progress none
  measure "atrest-scan-verify" "$RUNS" "$atrest" scan --verify "${flags[@]}" --progress none
  measure "atrest-report-json" "$RUNS" "$atrest" report --no-history --format json "${flags[@]}"
} | tee "$work/results.txt" >&2

# Exact per resource: atrest's totals against etcd's own count at the same revision.
"$atrest" scan "${flags[@]}" --progress none -o json >"$work/scan.json" || true
python3 - "$work/scan.json" "$ETCDCTL_ENDPOINTS" "${segments[@]}" <<'PY'
import json, subprocess, sys
scan = json.load(open(sys.argv[1]))
endpoint, segs = sys.argv[2], sys.argv[3:]
rev = scan["revision"]
totals = {r["resource"]: r["total"] for r in scan["resources"]}
def name(seg):
    if "/" in seg:
        g, r = seg.split("/"); return f"{r}.{g}"
    return seg
def count(prefix):
    out = subprocess.run(["etcdctl", "get", prefix, "--prefix",
                          "--count-only", f"--rev={rev}", "-w", "fields"], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"etcdctl count of {prefix} at revision {rev}: {out.stderr.strip()}")
    # `"Count" : 5000` (no line when the count is 0)
    for line in out.stdout.splitlines():
        if line.startswith('"Count"'):
            return int(line.split(":")[1])
    return 0
bad = 0
for seg in segs:
    raw = count(f"/registry/{seg}/")
    got = totals.get(name(seg), 0)
    if got != raw:
        bad += 1
        print(f"MISMATCH {seg}: atrest {got}, etcd {raw}", file=sys.stderr)
allraw = count("/registry/")
print(f"exact: {len(segs) - bad} of {len(segs)} seeded resources match etcd's count at revision {rev}; "
      f"census total {sum(totals.values())} = etcd {allraw}: {sum(totals.values()) == allraw}", file=sys.stderr)
sys.exit(1 if bad or sum(totals.values()) != allraw else 0)
PY

awk -v n="$N" '
  { label[NR]=$1; t[NR]=$2; rss[NR]=$3; if ($4 > 0) label[NR]=$1 " (FAILED: exit " $4 ")"; if ($1=="etcdctl-get-registry-protobuf") base=$2 }
  END {
    printf "\n%d objects of 256 B of data over 20 resources (plaintext protobuf; secrets under an aescbc config):\n", n
    printf "| command | wall s | vs etcdctl get /registry --prefix | peak RSS MiB |\n|---|---:|---:|---:|\n"
    for (i=1;i<=NR;i++) printf "| %s | %.2f | %.2f | %.1f |\n", label[i], t[i], (base>0? t[i]/base : 0), rss[i]/1024
  }' "$work/results.txt"
