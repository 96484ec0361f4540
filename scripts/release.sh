#!/usr/bin/env bash
# Builds the release tarball on a fresh machine (Debian with Rust; it installs the rest):
#
#   dist/atrest-<version>-x86_64-linux.tar.gz   atrest-<version>-x86_64-linux/
#                                                 atrest          stripped, runs on glibc >= 2.17
#                                                 LICENSE, README.md
#                                                 man/            atrest.1, atrest-<command>.1, …
#                                                 completions/    atrest.bash, _atrest (zsh),
#                                                                 atrest.fish, atrest.ps1
#                                                 SHA256SUMS      of every file above
#   dist/SHA256SUMS                              of the tarball (sha256sum -c SHA256SUMS)
#   dist/atrest.yaml                             the krew manifest (deploy/krew/atrest.yaml with
#                                                the tarball's version, URL and sha256 filled in)
#
#   scripts/release.sh                 build, package, check `cargo install --path .`
#   scripts/release.sh --update-krew   also write the filled-in manifest back to
#                                      deploy/krew/atrest.yaml (for the release commit)
#
# The binary is linked by cargo-zigbuild (zig as the linker, against glibc 2.17's symbols), both
# from PyPI. ATREST_RELEASE_URL is where the tarball will be published (the krew manifest's uri).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD

log() { printf '\n== %s\n' "$*" >&2; }

update_krew=false
for a in "$@"; do
  case $a in
    --update-krew) update_krew=true ;;
    *) echo "usage: scripts/release.sh [--update-krew]" >&2; exit 2 ;;
  esac
done

# What the build needs: protoc (prost-build), python3 + pip (zig and cargo-zigbuild come from PyPI).
missing=()
command -v protoc >/dev/null || missing+=(protobuf-compiler)
command -v python3 >/dev/null || missing+=(python3)
python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if ! command -v cargo-zigbuild >/dev/null || ! python3 -m ziglang version >/dev/null 2>&1; then
  log "pip install ziglang cargo-zigbuild"
  # Debian's own python refuses a system-wide pip install without this flag.
  python3 -m pip install --quiet ziglang cargo-zigbuild 2>/dev/null ||
    python3 -m pip install --quiet --break-system-packages ziglang cargo-zigbuild
  hash -r
  command -v cargo-zigbuild >/dev/null || export PATH="$HOME/.local/bin:$PATH"
fi

meta=$(cargo metadata --format-version 1 --no-deps)
version=$(python3 -c 'import json,sys; m=json.load(sys.stdin); print(next(p["version"] for p in m["packages"] if p["name"]=="atrest"))' <<<"$meta")
target_dir=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])' <<<"$meta")
name=atrest-$version-x86_64-linux
triple=x86_64-unknown-linux-gnu
glibc=2.17

log "cargo zigbuild --profile release-dist --target $triple.$glibc"
start=$(date +%s)
# zig keeps its cache under ~/.cache/zig unless told otherwise. `-p atrest`: features are
# unified across the packages a build selects, and the default members include the test bed,
# which turns on `failpoints` (test-only crash points) in atrest; the release must not have them.
cargo zigbuild --locked --profile release-dist --target "$triple.$glibc" -p atrest --bin atrest
build_s=$(($(date +%s) - start))
bin=$target_dir/$triple/release-dist/atrest

log "packaging $name"
rm -rf "dist/$name" "dist/$name.tar.gz"
stage=dist/$name
mkdir -p "$stage/man" "$stage/completions"
cp "$bin" "$stage/atrest"
cp LICENSE README.md "$stage/"
"$stage/atrest" man --dir "$stage/man"
"$stage/atrest" completions bash >"$stage/completions/atrest.bash"
"$stage/atrest" completions zsh >"$stage/completions/_atrest"
"$stage/atrest" completions fish >"$stage/completions/atrest.fish"
"$stage/atrest" completions powershell >"$stage/completions/atrest.ps1"
(cd "$stage" && find . -type f ! -name SHA256SUMS -printf '%P\n' | LC_ALL=C sort | xargs sha256sum >SHA256SUMS)
# Reproducible archive: sorted names, root-owned, every mtime the commit's time.
mtime=$(git log -1 --format=%ct 2>/dev/null || date +%s)
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$mtime" \
  -C dist -cf - "$name" | gzip -9n >"dist/$name.tar.gz"
rm -rf "$stage"
(cd dist && sha256sum "$name.tar.gz" >SHA256SUMS)
sha=$(cut -d' ' -f1 dist/SHA256SUMS)

log "krew manifest"
url=${ATREST_RELEASE_URL:-https://github.com/OWNER/atrest/releases/download/v$version}
python3 - deploy/krew/atrest.yaml "$version" "$url/$name.tar.gz" "$sha" "$name" >dist/atrest.yaml <<'PY'
import re, sys
manifest, version, uri, sha, name = sys.argv[1:]
text = open(manifest).read()
text = re.sub(r'(?m)^(  version: ).*$', r'\g<1>v' + version, text)
text = re.sub(r'(?m)^(    uri: ).*$', r'\g<1>' + uri, text)
text = re.sub(r'(?m)^(    sha256: ).*$', r'\g<1>' + sha, text)
text = re.sub(r'atrest-[0-9][^/\s]*-x86_64-linux/', name + '/', text)
sys.stdout.write(text)
PY
grep -q "sha256: $sha" dist/atrest.yaml || { echo "the krew manifest was not filled in" >&2; exit 1; }
if $update_krew; then cp dist/atrest.yaml deploy/krew/atrest.yaml; fi

# `cargo install --path .` must work as the README says; --debug reuses the test build's
# artifacts (the profile is not what is checked here, the install is).
log "cargo install --path . (into a temporary root)"
tmp=$(mktemp -d -t atrest-install.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
cargo install --quiet --locked --debug --path . --root "$tmp"
"$tmp/bin/atrest" --version | grep -q "^atrest $version " || { echo "cargo install --path . gave no working atrest" >&2; exit 1; }

size=$(stat -c %s "$bin")
glibc_max=$( (objdump -T "$bin" 2>/dev/null || true) | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -1)
log "done in ${build_s} s of build"
echo "dist/$name.tar.gz  $(stat -c %s "dist/$name.tar.gz") bytes, binary $size bytes, highest symbol version ${glibc_max:-unknown}, sha256 $sha" >&2
