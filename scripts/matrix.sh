#!/usr/bin/env bash
# The version matrix: builds every pair of scripts/k8s/matrix (Kubernetes x etcd, cached like the
# newest pair) and runs the core tests against each on a real control plane of that version.
# The full suite runs on the newest pair (scripts/test.sh); this proves the README's
# "Supported versions" table for the others.
#
#   scripts/matrix.sh            every pair
#   scripts/matrix.sh kube-1.34 etcd-3.5 [unsupported]   one pair
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# The core set: binary and test name (exact). What each proves is in the README table.
core=(
  "versions status_names_the_apiserver_and_etcd_releases_and_proves_the_loaded_config"
  "versions rotate_run_follows_the_automatic_reload_or_refuses_an_apiserver_without_the_metric"
  "exact_counts every_number_is_exact_beyond_the_list_caps"
  "testbed secrets_are_stored_with_the_configured_key_and_rotate_on_an_unchanged_put"
  "reencrypt the_minimal_patch_rewrites_stale_and_leaves_current_untouched"
  "reencrypt the_protobuf_put_rewrites_stale_keeps_every_stored_byte_and_leaves_current_untouched"
  "reencrypt a_concurrent_writer_never_loses_an_update"
  "rotate rotations_key_provider_on_and_off"
  "rotate prune_needs_proof_and_the_snapshot_still_opens_with_the_archive"
  "snapshot offline_scans_match_live_and_find_history_and_free_page_residue_until_compact_and_defrag"
  "scan streamed_reads_visit_every_key_once_and_etcd_before_3_7_is_read_by_pages"
  "kms to_kms_v2_key_id_change_and_back"
  "report compliant_cluster_passes_and_renders_in_chromium"
  "report each_failure_fails_the_right_check_with_evidence"
  "svm svm_where_the_api_is_not_served_exits_2_before_any_write"
)
# A pair marked `unsupported` (a release before the supported range) runs only these.
refused=(
  "versions status_names_the_apiserver_and_etcd_releases_and_proves_the_loaded_config"
  "versions rotate_run_follows_the_automatic_reload_or_refuses_an_apiserver_without_the_metric"
)
# select <entries…>: sets bins (--test flags) and names (exact test names).
select_tests() {
  bins=()
  names=()
  for c in "$@"; do
    read -r bin name <<<"$c"
    [[ " ${bins[*]} " == *" --test $bin "* ]] || bins+=(--test "$bin")
    names+=("$name")
  done
}

if [ $# -ge 2 ]; then
  pairs=("$1 $2 ${3:-}")
else
  pairs=()
  while read -r kube etcd mark; do
    case $kube in '' | '#'*) continue ;; esac
    pairs+=("$kube $etcd ${mark:-}")
  done <scripts/k8s/matrix
fi

# Compile the test binaries once, before any pair.
select_tests "${core[@]}"
cargo test --locked --no-run "${bins[@]}" >&2
# Every listed test must exist before any pair runs (a renamed test would otherwise match nothing).
for c in "${core[@]}" "${refused[@]}"; do
  read -r bin name <<<"$c"
  # (the list is read whole first: `grep -q` stopping early would break the pipe under pipefail)
  listed=$(cargo test --locked -q --test "$bin" -- --list 2>/dev/null)
  grep -qxF "$name: test" <<<"$listed" || {
    echo "scripts/matrix.sh lists $bin $name, but tests/$bin.rs has no such test" >&2
    exit 1
  }
done

# One Go build cache for every build of this run (the releases share most packages), deleted
# at the end; see scripts/k8s/build.sh.
if [ -z "${ATREST_GOCACHE:-}" ]; then
  mkdir -p "${XDG_CACHE_HOME:-$HOME/.cache}/atrest/k8s"
  ATREST_GOCACHE=$(mktemp -d "${XDG_CACHE_HOME:-$HOME/.cache}/atrest/k8s/.gocache.XXXXXX")
  export ATREST_GOCACHE
  trap 'rm -rf "$ATREST_GOCACHE"' EXIT
fi
# Build every pair first (one Go build at a time), and check each folder holds the pinned
# releases: the tests read the versions from the binaries.
dirs=()
for p in "${pairs[@]}"; do
  read -r kube etcd mark <<<"$p"
  dir=$(scripts/k8s/build.sh "$kube" "$etcd")
  want_k8s=$(sed 's://.*$::' "scripts/k8s/$kube/go.mod" | grep -oE 'k8s\.io/kubernetes v[0-9.]+' | head -1 | cut -d' ' -f2)
  want_etcd=$(sed 's://.*$::' "scripts/k8s/$etcd/go.mod" | grep -oE 'go\.etcd\.io/etcd/server/v3 v[0-9.]+' | head -1 | cut -d' ' -f2)
  got_k8s=$("$dir/kube-apiserver" --version | awk '{print $2}')
  got_etcd=$("$dir/etcd" --version | awk '/^etcd Version:/ {print "v" $3}')
  if [ "$got_k8s" != "$want_k8s" ] || [ "$got_etcd" != "$want_etcd" ]; then
    echo "$dir holds kube-apiserver $got_k8s and etcd $got_etcd, not $want_k8s and $want_etcd" >&2
    exit 1
  fi
  dirs+=("$dir")
done

# Pairs run ATREST_MATRIX_JOBS at a time (2): most of a pair's time is spent waiting for the
# apiserver's once-a-minute automatic reload, so two pairs share 2 cores well. Each pair's
# output goes to target/matrix/<pair>.log, printed when the pair ends.
logs=target/matrix
mkdir -p "$logs"
run_pair() { # <index>
  local p=${pairs[$1]} dir=${dirs[$1]} kube etcd mark start status=0
  read -r kube etcd mark <<<"$p"
  if [ "$mark" = unsupported ]; then select_tests "${refused[@]}"; else select_tests "${core[@]}"; fi
  local name
  name=$(basename "$dir")
  start=$(date +%s)
  ATREST_K8S_BIN=$dir RUST_TEST_THREADS="${ATREST_TEST_THREADS:-2}" \
    cargo test --locked "${bins[@]}" -- --exact "${names[@]}" >"$logs/$name.log" 2>&1 || status=$?
  local took=$(($(date +%s) - start)) verdict=passed what="${#names[@]} core tests"
  [ "$mark" = unsupported ] && what="${#names[@]} version tests (unsupported release: refused)"
  # cargo exits 0 when an exact name matches nothing (a renamed test): every name of the list
  # must have run and passed, and nothing else.
  local passed n missing=()
  passed=$(grep -c '^test .* \.\.\. ok$' "$logs/$name.log" || true)
  for n in "${names[@]}"; do
    grep -qxF "test $n ... ok" "$logs/$name.log" || missing+=("$n")
  done
  if [ ${#missing[@]} -gt 0 ] || [ "$passed" -ne "${#names[@]}" ]; then
    printf 'matrix %s: %s of %s listed tests passed; not run or not passed: %s\n' \
      "$name" "$passed" "${#names[@]}" "${missing[*]:-(none; extra tests ran)}" >>"$logs/$name.log"
    [ $status -ne 0 ] || status=1
  fi
  [ $status -eq 0 ] || verdict=FAILED
  printf '\n== matrix: %s (%s)\n' "$name" "$dir" >&2
  cat "$logs/$name.log" >&2
  echo "$name: $what $verdict ($passed passed) in $took s" >"$logs/$name.result"
  return $status
}
failed=0
running=0
for i in "${!pairs[@]}"; do
  if [ $running -ge "${ATREST_MATRIX_JOBS:-2}" ]; then
    wait -n || failed=1
    running=$((running - 1))
  fi
  run_pair "$i" &
  running=$((running + 1))
done
while [ $running -gt 0 ]; do
  wait -n || failed=1
  running=$((running - 1))
done
printf '\n== matrix summary\n' >&2
for d in "${dirs[@]}"; do cat "$logs/$(basename "$d").result" >&2; done
exit $failed
