#!/usr/bin/env bash
# Runs every cargo-fuzz target for a short budget (ATREST_FUZZ_SECONDS each, 60 by default),
# seeded with its regression inputs, on top of the replay that `cargo test --test
# fuzz_regressions` does on stable Rust. Needs the nightly toolchain (AddressSanitizer) and
# cargo-fuzz; installs both when missing. Any crash, leak of a key into an error, or property
# failure fails the script. fuzz/README.md records the last long run of each target.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
secs=${ATREST_FUZZ_SECONDS:-60}

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  echo "installing the nightly toolchain (cargo-fuzz builds with -Zsanitizer=address)" >&2
  rustup toolchain install nightly --profile minimal
fi
if ! command -v cargo-fuzz >/dev/null; then
  echo "installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked
fi

targets=(config_parse classify db_file)
# Every target in fuzz/Cargo.toml is run: a new one must be added above.
listed=$(grep -A1 '^\[\[bin\]\]' fuzz/Cargo.toml | grep -oP 'name = "\K[^"]+' | sort | tr '\n' ' ')
want=$(printf '%s\n' "${targets[@]}" | sort | tr '\n' ' ')
if [ "$listed" != "$want" ]; then
  echo "scripts/fuzz.sh runs '$want' but fuzz/Cargo.toml has '$listed'" >&2
  exit 1
fi

# Seeds: generated (examples/fuzz_corpus.rs, already built by the test stage) plus every
# regression input.
cargo run --quiet --locked --example fuzz_corpus >&2
for t in "${targets[@]}"; do
  corpus=fuzz/corpus/$t
  mkdir -p "$corpus"
  cp fuzz/regressions/"$t"/* "$corpus"/ 2>/dev/null || true
  extra=()
  case $t in
    config_parse) extra=(-dict=fuzz/config_parse.dict) ;;
    db_file) extra=(-max_len=65536) ;;
  esac
  printf '\n== fuzz %s for %s s\n' "$t" "$secs" >&2
  mkdir -p target
  log=target/fuzz-$t.log
  if ! cargo +nightly fuzz run --fuzz-dir fuzz "$t" "$corpus" -- \
    -max_total_time="$secs" -print_final_stats=1 "${extra[@]}" >"$log" 2>&1; then
    tail -n 60 "$log" >&2
    echo "fuzz target $t failed: the input is in fuzz/artifacts/$t/, the log in $log" >&2
    exit 1
  fi
  grep -E '^(stat::number_of_executed_units|stat::average_exec_per_sec|stat::new_units_added|Done )' "$log" >&2 || true
done
