#!/usr/bin/env bash
# Benchmark: `atrest exporter` while it scans N secrets (1 KiB, aescbc) back to back
# (--interval 1s; a scan of 100,000 takes most of that second). A scraper GETs /metrics for
# DURATION seconds and records each latency and whether a scan was running (the page's
# atrest_scan_in_progress); the exporter's VmRSS is read from /proc at every scrape, VmHWM at
# the end. Prints p50/p99/max scrape latency (all, and during scans) and RSS at rest / during
# scans / first vs last rest sample (flat across scans?).
#
#   scripts/bench-exporter.sh [N=100000] [DURATION=60]
set -euo pipefail
N=${1:-100000}
DURATION=${2:-60}
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
seeded_cluster "$N"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$atrest" exporter --config "$ATREST_CONFIG" --endpoints "$ETCDCTL_ENDPOINTS" --no-apiservers \
  --listen "127.0.0.1:$port" --interval 1s 2>"$work/exporter.log" &
exporter=$!
trap 'kill $exporter 2>/dev/null; kill $testbed 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT

python3 - "$port" "$exporter" "$DURATION" "$N" <<'PY'
import sys, time, http.client, re
port, pid, duration, n = int(sys.argv[1]), sys.argv[2], float(sys.argv[3]), int(sys.argv[4])

def rss():
    s = open(f"/proc/{pid}/status").read()
    return {k: int(re.search(rf"{k}:\s+(\d+)", s).group(1)) for k in ("VmRSS", "VmHWM")}

def get():
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    t0 = time.perf_counter()
    c.request("GET", "/metrics")
    body = c.getresponse().read().decode()
    dt = time.perf_counter() - t0
    c.close()
    return dt, body

# Wait for the first good scan of all N.
deadline = time.time() + 600
while True:
    try:
        _, body = get()
        m = re.search(r'atrest_stored_objects\{[^}]*state="on_write_key"[^}]*\} (\d+)', body)
        if m and int(m.group(1)) >= n:
            break
    except OSError:
        pass
    if time.time() > deadline:
        sys.exit("no complete scan within 600 s")
    time.sleep(0.2)

lat_all, lat_scan, rss_rest, rss_scan = [], [], [], []
scans_before = None
end = time.time() + duration
while time.time() < end:
    dt, body = get()
    scanning = re.search(r"^atrest_scan_in_progress 1$", body, re.M) is not None
    r = rss()["VmRSS"]
    lat_all.append(dt)
    (lat_scan if scanning else []).append(dt)
    (rss_scan if scanning else rss_rest).append(r)
    time.sleep(0.005)
dur = re.search(r"^atrest_scan_duration_seconds (\S+)$", body, re.M).group(1)
hwm = rss()["VmHWM"]

def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))] * 1000 if xs else float("nan")

print(f"\n{n} secrets of 1 KiB (aescbc), exporter --interval 1s, {duration:.0f} s of scraping; last scan took {float(dur):.2f} s")
print("| scrapes | count | p50 ms | p99 ms | max ms |\n|---|---:|---:|---:|---:|")
for name, xs in (("all", lat_all), ("during a scan", lat_scan)):
    print(f"| {name} | {len(xs)} | {pct(xs,50):.2f} | {pct(xs,99):.2f} | {pct(xs,100):.2f} |")
mib = lambda k: k / 1024
print("| exporter RSS | MiB |\n|---|---:|")
print(f"| at rest (between scans), first sample | {mib(rss_rest[0]):.1f} |")
print(f"| at rest, last sample | {mib(rss_rest[-1]):.1f} |")
print(f"| at rest, max | {mib(max(rss_rest)):.1f} |")
print(f"| during scans, max VmRSS | {mib(max(rss_scan)) if rss_scan else float('nan'):.1f} |")
print(f"| peak (VmHWM) | {mib(hwm):.1f} |")
PY
