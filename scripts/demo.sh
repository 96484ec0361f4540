#!/usr/bin/env bash
# The main job of atrest on a local control plane it starts itself (real etcd + kube-apiserver,
# built from their Go modules): 1,000 secrets written as plaintext and proven so in etcd, then
# `atrest rotate run` turns encryption on with secretbox (the provider atrest recommends without a
# KMS) step by guarded step, `atrest status` shows before and after, and `atrest report` writes
# the audit evidence as one HTML file — naming what the rotation left behind: the plaintext in
# etcd's history and in the snapshot taken before it.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "building the Kubernetes binaries (cached) and atrest"
setup
say "starting etcd and kube-apiserver (work folder $work)"
testbed_start
echo "apiserver $ATREST_APISERVER_URL, etcd $ETCDCTL_ENDPOINTS"

count=${DEMO_SECRETS:-1000}
say "creating $count secrets through the API (the config says identity: plaintext)"
"$root/target/release/examples/seed" "$KUBECONFIG" demo "$count" 256 0

say "what etcd stores for demo/s-0000001 (first bytes, read with etcdctl)"
etcdctl get /registry/secrets/demo/s-0000001 --print-value-only | head -c 48 | od -An -c | head -3

status() {
  # Only the manifest: the config path, etcd endpoints and prefix are discovered from it.
  env -u ATREST_CONFIG -u ETCDCTL_ENDPOINTS "$atrest" status --apiserver-manifest "$ATREST_APISERVER_MANIFEST" --state-dir "$work/state" "$@" || true
}

say "atrest status before"
status

# kube-apiserver reloads its encryption config by itself within about a minute. To keep the
# demo short, restart it whenever the file changes (what an admin does without automatic reload).
(
  last=$(sha256sum "$ATREST_CONFIG")
  while kill -0 $testbed 2>/dev/null; do
    now=$(sha256sum "$ATREST_CONFIG" 2>/dev/null || true)
    if [ -n "$now" ] && [ "$now" != "$last" ]; then last=$now; kill -HUP $testbed; fi
    sleep 0.3
  done
) &

say "atrest rotate run --provider secretbox: turn encryption on, step by guarded step"
env -u ATREST_CONFIG -u ETCDCTL_ENDPOINTS "$atrest" rotate run --provider secretbox \
  --apiserver-manifest "$ATREST_APISERVER_MANIFEST" --state-dir "$work/state"

say "what etcd stores for demo/s-0000001 now"
etcdctl get /registry/secrets/demo/s-0000001 --print-value-only | head -c 48 | od -An -c | head -2

say "atrest status after"
status

say "atrest report: the audit evidence, as one self-contained HTML file"
report_file=${DEMO_REPORT:-$root/target/atrest-demo-report.html}
report() {
  env -u ATREST_CONFIG -u ETCDCTL_ENDPOINTS "$atrest" report --verify \
    --apiserver-manifest "$ATREST_APISERVER_MANIFEST" --state-dir "$work/state" "$@"
}
# Signed: an Ed25519 key of the admin's (private key 0600, never printed) signs the report; the
# auditor verifies it offline with the public key.
"$atrest" keys signing-key --out "$work/signing.pem" >"$work/signing.pub"
report --format html --out "$report_file" --sign "$work/signing.pem" ||
  echo "(the report found findings: exit $?)"
echo "report: $report_file"
say "the auditor's check: atrest report verify (the signature, then the report's sha256)"
"$atrest" report verify --key "$work/signing.pub" "$report_file.intoto.json"

say "what the report says is left behind (its Findings; the same in the HTML)"
# Every stored object is encrypted now, but the rotation cannot touch the old copies: the
# plaintext revisions still in etcd's history (until a compaction) and the snapshot atrest took
# before it. The report reads them by default and names them, with the commands that drop them.
report --format md --out "$work/report.md" || true
sed -n '/^## Findings/,/^## Cluster/p' "$work/report.md" | sed '$d'
grep -m1 '^# ' "$work/report.md"
echo "(drop them: run the etcdctl compact/defrag commands the report prints, then atrest rotate prune --remove-snapshots)"
