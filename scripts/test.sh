#!/usr/bin/env bash
# Runs every test of atrest on a fresh machine: installs what is missing, builds the real
# Kubernetes binaries (cached outside the repo), then formatting, lints and all tests against a
# real etcd and kube-apiserver (the newest pair), then the version matrix when asked
# (ATREST_MATRIX=1) or already built.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Each stage's heading shows the free disk where target/ lives: CI once ran out of it mid-build.
log() { printf '\n== %s (%s free)\n' "$*" "$(df -h --output=avail . 2>/dev/null | tail -1 | tr -d ' ')" >&2; }

# Every artifact is built once here: no incremental caches, which about double target/'s size.
export CARGO_INCREMENTAL=0

# Debian packages: protoc (prost-build), util-linux (unshare, for a second apiserver identity),
# chromium (the HTML report is checked in a real headless browser) and binutils (objdump reads
# the release binary's glibc symbol versions).
missing=()
command -v protoc >/dev/null || missing+=(protobuf-compiler)
command -v unshare >/dev/null || missing+=(util-linux)
command -v chromium >/dev/null || missing+=(chromium)
command -v objdump >/dev/null || missing+=(binutils)
# prometheus and promtool: the alert rules are checked and unit-tested, and the exporter test
# scrapes atrest with a real Prometheus (started by the test bed on loopback).
{ command -v promtool >/dev/null && command -v prometheus >/dev/null; } || missing+=(prometheus)
# python3-venv: the independent verifiers of the signed evidence and OSCAL (below) live in a venv.
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Rust components used below.
if command -v rustup >/dev/null; then
  rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
  rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
fi

log "independent verifiers (Python): securesystemslib (DSSE, as in-toto verifies), in-toto-attestation (the statement's schema), compliance-trestle (OSCAL)"
# One venv outside the repo, reused while it has what the evidence tests import.
ATREST_PYTHON="${XDG_CACHE_HOME:-$HOME/.cache}/atrest/venv/bin/python"
if ! "$ATREST_PYTHON" -c 'import securesystemslib.dsse, cryptography, in_toto_attestation.predicates.test_result.v0.test_result_pb2, trestle.oscal.assessment_results' 2>/dev/null; then
  python3 -m venv "${XDG_CACHE_HOME:-$HOME/.cache}/atrest/venv"
  "$ATREST_PYTHON" -m pip install -q --disable-pip-version-check \
    'securesystemslib>=1.0' cryptography 'in-toto-attestation>=0.9' 'compliance-trestle>=3'
fi
export ATREST_PYTHON

log "Kubernetes test binaries"
# One Go build cache for every Kubernetes and etcd build of this run (the newest pair and the
# matrix share most packages), deleted at the end (scripts/k8s/build.sh).
mkdir -p "${XDG_CACHE_HOME:-$HOME/.cache}/atrest/k8s"
ATREST_GOCACHE=$(mktemp -d "${XDG_CACHE_HOME:-$HOME/.cache}/atrest/k8s/.gocache.XXXXXX")
export ATREST_GOCACHE
matrix_build="" fuzz=""
# On exit: stop what still runs in the background (below), then drop the cache.
trap 'for p in $matrix_build $fuzz; do kill -- -"$p" 2>/dev/null || true; done; rm -rf "$ATREST_GOCACHE"' EXIT
ATREST_K8S_BIN=$(scripts/k8s/build.sh)
export ATREST_K8S_BIN
echo "$ATREST_K8S_BIN" >&2

# The version matrix (README "Supported versions"), at the end: run when asked (ATREST_MATRIX=1,
# as .ci/run does; it builds what is missing) or when every pair is already built;
# ATREST_MATRIX=0 skips it.
run_matrix=0
if [ "${ATREST_MATRIX:-}" = 1 ] || { [ "${ATREST_MATRIX:-}" != 0 ] && scripts/k8s/build.sh --where --matrix >/dev/null 2>&1; }; then
  run_matrix=1
fi
# background NAME CMD...: runs CMD beside the stages that follow at the lowest priority, in a
# session of its own (stopped on exit, see the trap above), output in target/NAME.log, and sets
# $bg to its pid. With the kernel's autogroups a new session is a scheduling group of its own,
# whose weight its processes' nice cannot lower: the group's nice is set too.
background() {
  local name=$1
  shift
  mkdir -p target
  setsid nice -n 19 "$@" >"target/$name.log" 2>&1 &
  bg=$!
  [ ! -w "/proc/$bg/autogroup" ] || echo 19 >"/proc/$bg/autogroup" 2>/dev/null || true
}
# finish NAME PID START: waits for a background stage, prints its log, fails as it failed.
finish() {
  local status=0
  wait "$2" || status=$?
  cat "target/$1.log" >&2
  echo "$1 ended $(($(date +%s) - $3)) s after it started (exit $status)" >&2
  [ $status -eq 0 ] || { echo "$1 failed: its log is above" >&2; exit $status; }
}
# The matrix builds take about 26 minutes of both cores from cold, and the tests below leave
# much of the CPU idle (they mostly wait for the apiserver's once-a-minute reload): the builds
# run beside the lints and tests. The matrix stage waits for them.
if [ $run_matrix = 1 ] && ! scripts/k8s/build.sh --where --matrix >/dev/null 2>&1; then
  log "version matrix builds: scripts/k8s/build.sh --matrix in the background, at the lowest priority (target/matrix-build.log)"
  background matrix-build scripts/k8s/build.sh --matrix
  matrix_build=$bg
  matrix_build_start=$(date +%s)
fi

log "cargo fmt --check"
cargo fmt --all -- --check

log "alert rules: promtool check rules, promtool test rules"
promtool check rules deploy/prometheus/atrest-alerts.yaml
(cd deploy/prometheus && promtool test rules atrest-alerts.test.yaml)

log "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

log "release tarball: scripts/release.sh (tests/release.rs checks what it puts in dist/)"
scripts/release.sh

log "cargo test"
start=$(date +%s)
# RUST_TEST_THREADS rather than --test-threads: the divan bench target (run once as a test) takes no libtest flags.
RUST_TEST_THREADS="${ATREST_TEST_THREADS:-2}" cargo test --workspace --all-targets --locked
echo "tests took $(($(date +%s) - start)) s" >&2

if [ $run_matrix = 1 ] && [ -n "$matrix_build" ]; then
  log "version matrix builds: waiting for the background build"
  finish matrix-build "$matrix_build" "$matrix_build_start"
  matrix_build=""
fi

# Each fuzz target for a short budget on nightly (the regressions are replayed by cargo test
# above on stable): ATREST_FUZZ_SECONDS per target, 60 by default; 0 skips it. Beside the
# matrix (mostly waiting for reloads) when it runs, at the lowest priority: its nightly build
# with AddressSanitizer takes minutes of both cores.
fuzz=""
if [ "${ATREST_FUZZ_SECONDS:-60}" != 0 ]; then
  fuzz_start=$(date +%s)
  if [ $run_matrix = 1 ]; then
    log "fuzz: scripts/fuzz.sh (${ATREST_FUZZ_SECONDS:-60} s per target) in the background (target/fuzz.log)"
    background fuzz scripts/fuzz.sh
    fuzz=$bg
  else
    log "fuzz: scripts/fuzz.sh (${ATREST_FUZZ_SECONDS:-60} s per target)"
    scripts/fuzz.sh
    echo "fuzzing took $(($(date +%s) - fuzz_start)) s" >&2
  fi
fi

# The version matrix: the core tests against every older pair of scripts/k8s/matrix.
if [ $run_matrix = 1 ]; then
  log "version matrix: scripts/matrix.sh"
  start=$(date +%s)
  scripts/matrix.sh
  echo "matrix took $(($(date +%s) - start)) s" >&2
fi
if [ -n "$fuzz" ]; then
  log "fuzz: waiting for scripts/fuzz.sh"
  finish fuzz "$fuzz" "$fuzz_start"
  fuzz=""
fi
