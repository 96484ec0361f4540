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
  "reencrypt a_concurrent_writer_never_loses_an_update"
  "rotate rotations_key_provider_on_and_off"
  "kms to_kms_v2_key_id_change_and_back"
  "report compliant_cluster_passes_and_renders_in_chromium"
  "report each_failure_fails_the_right_check_with_evidence"
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

summary=()
failed=0
for p in "${pairs[@]}"; do
  read -r kube etcd mark <<<"$p"
  if [ "$mark" = unsupported ]; then select_tests "${refused[@]}"; else select_tests "${core[@]}"; fi
  start=$(date +%s)
  dir=$(scripts/k8s/build.sh "$kube" "$etcd")
  built=$(($(date +%s) - start))
  # The folder must hold the pinned releases: the tests read the versions from the binaries.
  want_k8s=$(sed 's://.*$::' "scripts/k8s/$kube/go.mod" | grep -oE 'k8s\.io/kubernetes v[0-9.]+' | head -1 | cut -d' ' -f2)
  want_etcd=$(sed 's://.*$::' "scripts/k8s/$etcd/go.mod" | grep -oE 'go\.etcd\.io/etcd/server/v3 v[0-9.]+' | head -1 | cut -d' ' -f2)
  got_k8s=$("$dir/kube-apiserver" --version | awk '{print $2}')
  got_etcd=$("$dir/etcd" --version | awk '/^etcd Version:/ {print "v" $3}')
  if [ "$got_k8s" != "$want_k8s" ] || [ "$got_etcd" != "$want_etcd" ]; then
    echo "$dir holds kube-apiserver $got_k8s and etcd $got_etcd, not $want_k8s and $want_etcd" >&2
    exit 1
  fi
  printf '\n== matrix: Kubernetes %s + etcd %s (%s)\n' "$got_k8s" "$got_etcd" "$dir" >&2
  start=$(date +%s)
  status=0
  ATREST_K8S_BIN=$dir RUST_TEST_THREADS="${ATREST_TEST_THREADS:-2}" \
    cargo test --locked "${bins[@]}" -- --exact "${names[@]}" || status=$?
  took=$(($(date +%s) - start))
  verdict=passed
  if [ $status -ne 0 ]; then verdict=FAILED; failed=1; fi
  what="${#names[@]} core tests"
  [ "$mark" = unsupported ] && what="${#names[@]} version tests (unsupported release: refused)"
  summary+=("Kubernetes $got_k8s + etcd $got_etcd: $what $verdict in $took s (build or cache check $built s)")
done
printf '\n== matrix summary\n' >&2
printf '%s\n' "${summary[@]}" >&2
exit $failed
