# Shared by demo.sh and the benchmark scripts: install what is missing, build, start the local
# control plane (real etcd + kube-apiserver, via the testbed example), measure commands.
# shellcheck shell=bash

setup() {
  cd "$(dirname "${BASH_SOURCE[0]}")/.."
  root=$PWD
  command -v protoc >/dev/null && [ -x /usr/bin/time ] || {
    sudo_cmd=""; [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq protobuf-compiler time >/dev/null
  }
  bins=$(scripts/k8s/build.sh)
  cargo build --release --quiet --bin atrest --example testbed --example seed
  atrest=$root/target/release/atrest
  seed=$root/target/release/examples/seed
  export PATH=$bins:$PATH
  work=$(mktemp -d -t atrest.XXXXXX)
}

# testbed_start [CONFIG_FILE]: starts etcd + kube-apiserver (with that encryption config, else
# identity for secrets) and sources their settings (KUBECONFIG, ETCDCTL_ENDPOINTS, …).
testbed_start() {
  "$root/target/release/examples/testbed" "$work/env" ${1:+"$1"} >"$work/testbed.log" 2>&1 &
  testbed=$!
  trap 'kill $testbed 2>/dev/null; wait $testbed 2>/dev/null; rm -rf "$work"' EXIT
  for _ in $(seq 1 300); do
    [ -f "$work/env" ] && break
    kill -0 $testbed 2>/dev/null || { cat "$work/testbed.log"; exit 1; }
    sleep 0.2
  done
  # shellcheck disable=SC1091
  source "$work/env"
}

# aescbc_config [NAME SECRET]...: secrets under aescbc with these keys, the first writing
# (default: key1 with a random secret), identity kept to read plaintext.
aescbc_config() {
  [ $# -gt 0 ] || set -- key1 "$(head -c 32 /dev/urandom | base64)"
  printf '%s\n' "apiVersion: apiserver.config.k8s.io/v1" "kind: EncryptionConfiguration" "resources:" \
    "  - resources: [secrets]" "    providers:" "      - aescbc:" "          keys:"
  while [ $# -ge 2 ]; do
    printf '%s\n' "            - name: $1" "              secret: $2"
    shift 2
  done
  printf '%s\n' "      - identity: {}"
}

# measure LABEL RUNS CMD...: runs CMD RUNS times (after one warm-up), prints "LABEL median_s
# max_rss_kib failed" (failed: the worst exit code above MEASURE_OK_EXIT, else 0; tables mark it).
measure() {
  local label=$1 runs=$2; shift 2
  [ -n "${NO_WARMUP:-}" ] || "$@" >/dev/null 2>&1 || true
  local times=() rss=0 failed=0
  for _ in $(seq 1 "$runs"); do
    # Exit 1 is atrest's "findings": a finished run, timed like any other.
    local rc=0
    /usr/bin/time -f "%e %M %U %S" -o "$work/time" "$@" >"$work/stdout" 2>"$work/stderr" || rc=$?
    if [ "$rc" -gt "${MEASURE_OK_EXIT:-0}" ]; then
      echo "($label exited $rc: $(tail -2 "$work/stderr" | tr '\n' ' '))" >&2
      [ "$rc" -gt "$failed" ] && failed=$rc
    fi
    # /usr/bin/time puts "Command exited with non-zero status N" before its figures.
    read -r t m u s < <(tail -n 1 "$work/time")
    # The last run's own CPU seconds (user + system), for profiles: $work/cpu.
    echo "$u $s" | awk '{print $1 + $2}' >"$work/cpu"
    times+=("$t")
    [ "$m" -gt "$rss" ] && rss=$m
  done
  local median
  median=$(printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  echo "$label $median $rss $failed"
}

# cpu_of NAME: CPU seconds (user + system) used so far by the processes named NAME (pgrep -x).
cpu_of() {
  local total=0 tick
  tick=$(getconf CLK_TCK)
  for p in $(pgrep -x "$1"); do
    total=$(awk -v t="$total" -v tick="$tick" '{print t + ($14 + $15) / tick}' "/proc/$p/stat")
  done
  echo "$total"
}

# testbed_restart_apiserver: restarts kube-apiserver (it loads the config file at once).
testbed_restart_apiserver() {
  local before=0
  [ -f "$work/env.restarts" ] && before=$(wc -l <"$work/env.restarts")
  kill -HUP "$testbed"
  for _ in $(seq 1 1200); do
    [ -f "$work/env.restarts" ] && [ "$(wc -l <"$work/env.restarts")" -gt "$before" ] && return 0
    sleep 0.1
  done
  echo "kube-apiserver did not come back" >&2
  exit 1
}

identity_config() {
  printf 'apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n      - identity: {}\n'
}

# seeded_cluster N: builds, starts a control plane under aescbc and seeds N secrets of 1 KiB
# (namespace bench) through the apiserver.
seeded_cluster() {
  setup
  aescbc_config >"$work/config.yaml"
  testbed_start "$work/config.yaml"
  echo "seeding $1 secrets" >&2
  "$seed" "$KUBECONFIG" bench "$1" 1024 0
}
