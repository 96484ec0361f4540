//! The long `--help` texts of the commands: what each reads and writes, examples, exit codes.

use atrest::report::checks::CHECKS;
use atrest::report::controls;

pub(super) const COMPLETIONS_HELP: &str = "\
Reads nothing; writes the script to stdout only. Install it where your shell looks, e.g.
  atrest completions bash > /etc/bash_completion.d/atrest
  atrest completions zsh  > \"${fpath[1]}/_atrest\"
  atrest completions fish > ~/.config/fish/completions/atrest.fish
  atrest completions powershell >> $PROFILE

Exit codes:
  0  written
  2  could not write (stdout closed)";

pub(super) const MAN_HELP: &str = "\
Reads nothing. Without --dir the page of `atrest` goes to stdout (man -l <(atrest man));
with --dir it writes atrest.1 and one page per subcommand (atrest-scan.1, atrest-rotate-run.1, …)
into that folder, creating it, e.g. --dir /usr/local/share/man/man1.

Exit codes:
  0  written
  2  could not write";

pub(super) const EXPORTER_HELP: &str = "\
Scans every --interval (one scan at a time, never per scrape) and serves the last good result from
memory on /metrics (Prometheus text format) and /healthz; a failed scan raises
atrest_scan_failures_total and leaves the last good values served. The config file and the
rotation state are re-read before each scan. Series: atrest_stored_objects{resource,key,state}
(the counts of `atrest scan -o json`), atrest_write_key_info, atrest_encryption_expected,
atrest_key_age_seconds, atrest_aesgcm_writes_estimate, atrest_apiserver_config_info,
atrest_apiservers_converged, atrest_scan_* (see the README). Alert rules: deploy/prometheus/.

Reads the config file (and the apiserver manifest), etcd, the rotation state in the state folder,
--policy, and with a kubeconfig each apiserver's /metrics. Writes nothing.

Exit codes:
  2  could not start (bad flags, address in use, unreadable config or policy); otherwise it runs
     until stopped";

pub(super) const STATUS_HELP: &str = "\
Reads: the apiserver manifest, the config file, etcd (a scan of every stored resource, unless
--no-scan), each apiserver's /metrics and default/kubernetes endpoints (through the kubeconfig), and
the state folder (the rotation stage, archived keys). Writes nothing: the summary goes to stdout.

Findings are those of `atrest scan` (see its --help), plus an apiserver that runs another config
than the file.

Exit codes:
  0  no finding (warnings may be shown)
  1  findings: plaintext where encryption is configured or required, stale objects with no
     rotation in progress, undecryptable/unknown-key/corrupt values (a rule or key removed while
     data still needed it), an apiserver on another config
  2  could not complete (no or invalid config, etcd unreachable, the scan failed)";

/// `atrest report --help`: what it reads and writes, the checks (from the library's table), the
/// policy and the exit codes.
pub(super) fn report_help() -> &'static str {
    static HELP: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HELP.get_or_init(|| {
        let cis = controls::cis_benchmark(None);
        let checks: String = CHECKS
            .iter()
            .map(|(id, title, _)| {
                let cited = controls::cited(&controls::controls(id, &cis));
                format!("  {id}  {title}\n           {cited}\n")
            })
            .collect();
        let (cis_name, releases) = (&cis.version, &cis.releases);
        format!(
            "\
Reads: the config file (and the apiserver manifest), etcd (a scan of every stored resource, or
--from-scan FILE), etcd's history, each member's db size and every backup file atrest can see
(its snapshots folder, rotation records, --backup-dir) unless --no-history, each apiserver's
/metrics, the state folder (rotation state, archived keys) and --policy. Writes: the report to
--out FILE or stdout, nothing else.

The report states when and by which atrest it was made, what was read (its scope), the etcd
cluster (ID, members, version, the revision the scan was pinned at), each apiserver and the
config hash it reports, the config file (path, sha256, mode, owner) with every resource's keys in
order (names and fingerprints), the rotation state, lint findings, the findings of `atrest scan`,
and these checks with evidence:
{checks}(ATR-C10 applies when KMS v2 values exist; ATR-C11 when history or backups were read.)
Under each check, the controls it gives evidence for: CIS Kubernetes Benchmark (numbered as in
{cis_name} for Kubernetes {releases}, and newer releases until a newer benchmark is published; a
report names the benchmark of its cluster's release), NIST SP 800-53, PCI DSS v4.0 and the DISA
Container Platform SRG. --format oscal writes them as an OSCAL assessment-results document.

Signed evidence: --sign KEYFILE (made by `atrest keys signing-key`) writes FILE.intoto.json
beside --out FILE, a DSSE envelope of an in-toto Statement (the report's sha256, the test
result); `atrest report verify --key PUBFILE FILE.intoto.json` (or any in-toto/securesystemslib
verifier) checks it offline.
Coverage per resource: encrypted with an allowed provider (the headline; plaintext counts
against it), with a discouraged one, or not at all; and encrypted with the write key.
The verdict is FAIL when a check fails, else PASS, or \"PASS with N warnings\" when checks warn.
It never contains a key or a secret value: only labels, fingerprints, hashes, counts and names.

Policy file (YAML; absent fields keep these defaults):
  allowedProviders: [kms-v2, secretbox, aesgcm]
  discouragedProviders: [aescbc, kms-v1]     # WARN instead of FAIL
  maxKeyAgeDays: 90
  requiredResources: [secrets]
  residue: warn                              # or fail: old copies fail ATR-C11 (and scan)
  sensitivePlaintext: warn                   # or fail: secret-looking plaintext fails ATR-C12

Exit codes: 0 PASS (with or without warnings), 1 FAIL, 2 could not complete.
`atrest report diff A.json B.json` prints what changed between two audits; it exits 1 only on a
regression (see `atrest report diff --help`)."
        )
    })
}

pub(super) const ROTATE_HELP: &str = "\
The runbook, one guarded step at a time (each refuses what would lose data):
  prepare    a new key becomes a read key everywhere (after an etcd snapshot)
  promote    once every apiserver runs that config: the new key becomes the write key,
             then a canary secret through each apiserver proves it writes with it
  reencrypt  every object rewritten through the apiserver, proven in etcd
  prune      after a fresh scan shows nothing uses them: old keys removed (and archived)
  run        all of the above in order;  abort  undo safely before prune
  run --if-older-than 28d   for a timer: exit 0 doing nothing while the write key is younger
             (and, for aesgcm, below the policy's aesgcmMaxWrites); a rotation in progress
             is resumed. One step at a time per state folder (rotate.lock): a second run while
             one is under way is refused (exit 2), never started twice.

Reads: the config file (and the apiserver manifest), etcd, each apiserver's /metrics, the state
folder. Writes: the config file (rotate is the only command that does; a backup first, into
the state folder), the state folder (rotation.json, backups/, the etcd snapshot, the reencrypt
checkpoint, key-archive.yaml, rotate.lock), canary secrets and object rewrites through the
apiserver. Never etcd.

Each step waits until every apiserver reports the new config hash on /metrics
(apiserver_encryption_config_controller_last_config_info). With several control-plane nodes,
give --sync-command to copy the file to the others after each write, to a temporary name and
then renamed, so that an apiserver never reads half a file, e.g.
  --sync-command 'for n in cp2 cp3; do scp \"$ATREST_CONFIG_FILE\" $n:/etc/kubernetes/enc/.enc.tmp &&
    ssh $n mv /etc/kubernetes/enc/.enc.tmp /etc/kubernetes/enc/enc.yaml || exit 1; done'
or copy it yourself; atrest waits until each apiserver has loaded it. A failed sync stops the step with the write
not yet committed: run the same command again and the sync runs again first.
State, backups, the snapshot, the checkpoint and the key archive live in the state folder
(default: /var/lib/atrest; state left beside the config by atrest 0.2 is moved there by the
next step). Every step can be re-run after a crash.

Exit codes:
  0  the step is done
  2  refused or could not complete (the message says why and what to do)
  3  interrupted during reencrypt; run the same command again";

pub(super) const REENCRYPT_HELP: &str = "\
How: the etcd scan finds each object not on its resource's write key (stale, or plaintext where the
config wants encryption), and asks the apiserver for an unchanged write of it:
  - built-in objects stored as protobuf that open without a KMS plugin (plaintext, aescbc, aesgcm,
    secretbox) and are stored in the version atrest writes through: a protobuf PUT of the stored
    object as it is, with only metadata.resourceVersion added (its uid is the stored one);
  - everything else (custom resources stored as JSON, KMS values, other versions): a JSON merge
    PATCH carrying only metadata.resourceVersion (and uid).
Both are preconditions. The apiserver rewrites a stale object with the current write key and
leaves a current one untouched; a concurrent change gets 409 and etcd is re-checked, so no write
is ever overwritten. Nothing is listed through the apiserver. The counters say which request
rewrote how many objects of each resource.

Progress is saved to the checkpoint every few seconds and on SIGINT/SIGTERM (in-flight writes
finish first); --resume continues where it stopped, and refuses if the config changed. At the end
etcd is read again: the result counts what is still not on its write key.

Reads: the config file (and the apiserver manifest), etcd, the apiservers' /metrics, the checkpoint.
Writes: objects, through the apiserver only (never etcd); the checkpoint in the state folder
(--checkpoint); nothing with --dry-run.

RBAC: patch on every resource rewritten (get/list are not needed); with update as well, the cheaper
PUT is used (refused PUTs fall back to PATCH); /metrics for the config check.

Exit codes:
  0  every object is now on its write key (proven in etcd)
  1  some objects were given up or are still not on their write key (listed)
  2  could not complete (bad config, etcd/apiserver unreachable, RBAC refused, apiserver lagging)
  3  interrupted by SIGINT/SIGTERM; the checkpoint is saved: run again with --resume";

pub(super) const SCAN_HELP: &str = "\
What is read: every key under the etcd prefix, each mapped back to its resource (built-in, custom
and aggregated alike), at one pinned revision, so counts are a consistent snapshot. The scope is
what etcd holds; the config only judges each value (--resource narrows the scan, and says so).
Resources the config leaves as plaintext are counted too.

Reads the config file (and the apiserver manifest), etcd (or the --snapshot file), the state
folder (its key archive, config backups and rotation state name keys that values need; a
rotation in progress), --key-archive, --policy, and with a kubeconfig each apiserver's /metrics.
Writes nothing: the result goes to stdout, progress to stderr; etcd is only read. With
--textfile DIR it also writes the exporter's series to DIR/atrest.prom (atomically), for
node_exporter's textfile collector.

Without --verify values are classified by prefix, key name and shape; with it every value is
decrypted too (and a value no configured key opens is reported as undecryptable).

What is a finding (exit 1), defined once for scan, status, report and the exporter:
  - plaintext where the config encrypts the resource or the policy requires it;
  - stale values (on a read key), unless a rotation in progress will rewrite them (a warning);
  - undecryptable or corrupt values, and values under a key their resource's config does not
    have (a rule removed by hand, a key pruned too early): named with the key's fingerprint and
    where atrest found it, and the rule that makes them readable again;
  - an apiserver that runs another config than the file;
  - residue (old copies) and secret-looking plaintext, when --policy says `fail` (else warnings).

Backups and old copies: --snapshot FILE reads an etcd snapshot or a member's db file instead of
etcd (read-only, no restore) and names its sha256 and every key its values need; --history also
reads etcd's older revisions (and a file's free pages, or live each member's db size), every
backup file in the state folder's snapshots and --backup-dir, and prints the etcdctl
compact/defrag commands that would drop what it finds. atrest never runs them.

Examples:
  atrest scan                                   on a control-plane node: settings from the manifest
  atrest scan --verify -o json > scan.json      decrypt every value; a stable JSON document
  atrest scan --history --backup-dir /var/backups/etcd
                                                also plaintext left in history and in backups
  atrest scan --snapshot backup.db --config encryption.yaml --key-archive key-archive.yaml
                                                is this backup encrypted, and which keys open it?

Exit codes:
  0  no finding (warnings may be shown)
  1  findings (above), listed by resource with what to do
  2  the scan could not complete (bad config, etcd unreachable or refusing, a damaged or
     unreadable --snapshot file)";

pub(crate) const EXIT_CODES: &str = "\
Exit codes:
  0  success: valid / no finding / step done
  1  findings: the command ran and found something to act on (the same rule in scan, status,
     report and the exporter's atrest_findings)
  2  could not complete: bad input, unreachable etcd or apiserver, refused step
  3  interrupted (SIGINT/SIGTERM); a checkpoint was written where the command keeps one";
