#!/usr/bin/env bash
# Builds the real Kubernetes and etcd binaries the test bed runs, and the reference age tools it
# checks atrest's age files against, from their Go modules, into a cache outside the repository,
# and prints the folder that holds them.
#
#   scripts/k8s/build.sh                    the newest pair (kube/ + etcd/); print its folder
#   scripts/k8s/build.sh KUBE ETCD          one pair of pin folders, e.g. kube-1.34 etcd-3.5
#   scripts/k8s/build.sh --matrix           every pair of scripts/k8s/matrix; one folder a line
#   scripts/k8s/build.sh --where [...]      only print the folder(s) (exit 1 when not built yet)
#
# Pins: one folder per version under scripts/k8s/ (go.mod, go.sum): kube/ is Kubernetes v1.37.2
# (with the KMS test plugin), etcd/ is etcd 3.7.0, kube-1.NN/ and etcd-3.N/ are the older ones,
# age/ is age v1.3.2 (filippo.io/age: age and age-keygen).
#
# Cache, under ${XDG_CACHE_HOME:-$HOME/.cache}/atrest/k8s/:
#   <kubernetes version>/                 the newest pair, as built files: kube-apiserver, kubectl,
#                                         kube-controller-manager, etcd, etcdctl, etcdutl,
#                                         kms-plugin, age, age-keygen
#   parts/kube-<version>/                 kube-apiserver and kubectl of an older Kubernetes
#   parts/etcd-<version>/                 etcd, etcdctl and etcdutl of an older etcd
#   <kubernetes version>+etcd-<version>/  a matrix pair: symlinks to its parts and to the newest
#                                         pair's kms-plugin (the KMS v2 gRPC API is the same),
#                                         age and age-keygen (they do not depend on the pair)
# ATREST_K8S_BIN=<folder> points the tests at one of them. Stamp files record a hash of the pins
# (go.mod, go.sum, *.go) per group of binaries; a different hash rebuilds that group.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache_root=${XDG_CACHE_HOME:-$HOME/.cache}/atrest/k8s
ldflags_version=3

where=0
if [ "${1:-}" = "--where" ]; then
  where=1
  shift
fi
if [ "${1:-}" = "--matrix" ]; then
  status=0
  args=()
  [ $where = 1 ] && args=(--where)
  # One Go build cache for every pair of this run (the Kubernetes releases share most
  # packages), deleted at the end.
  if [ $where = 0 ] && [ -z "${ATREST_GOCACHE:-}" ]; then
    mkdir -p "$cache_root"
    ATREST_GOCACHE=$(mktemp -d "$cache_root/.gocache.XXXXXX")
    export ATREST_GOCACHE
    trap 'rm -rf "$ATREST_GOCACHE"' EXIT
  fi
  "$0" "${args[@]}" || status=1
  while read -r kube etcd _; do
    case $kube in '' | '#'*) continue ;; esac
    "$0" "${args[@]}" "$kube" "$etcd" || status=1
  done <"$here/matrix"
  exit $status
fi
kube_pins=${1:-kube}
etcd_pins=${2:-etcd}
[ -f "$here/$kube_pins/go.mod" ] && [ -f "$here/$etcd_pins/go.mod" ] ||
  { echo "no pins in $here/$kube_pins or $here/$etcd_pins" >&2; exit 1; }

# The version a go.mod pins for a module (comments left out).
pinned() { sed 's://.*$::' "$here/$1/go.mod" | grep -oE "$2 v[0-9][^ ]*" | head -1 | cut -d' ' -f2; }
K8S_VERSION=$(pinned "$kube_pins" 'k8s\.io/kubernetes')
ETCD_VERSION=$(pinned "$etcd_pins" 'go\.etcd\.io/etcd/server/v3')
[ -n "$K8S_VERSION" ] || { echo "no k8s.io/kubernetes version in $here/$kube_pins/go.mod" >&2; exit 1; }
[ -n "$ETCD_VERSION" ] || { echo "no go.etcd.io/etcd/server/v3 version in $here/$etcd_pins/go.mod" >&2; exit 1; }

newest=0
[ "$kube_pins" = kube ] && [ "$etcd_pins" = etcd ] && newest=1
if [ $newest = 1 ]; then
  out=$cache_root/$K8S_VERSION
  declare -A dir=([kube]=$out [etcd]=$out [kms]=$out [age]=$out)
else
  out=$cache_root/$K8S_VERSION+etcd-$ETCD_VERSION
  declare -A dir=([kube]=$cache_root/parts/kube-$K8S_VERSION [etcd]=$cache_root/parts/etcd-$ETCD_VERSION)
fi
declare -A pins=([kube]=$kube_pins [etcd]=$etcd_pins [kms]=kube [age]=age)

# Each group of binaries is rebuilt when its own pins change.
stamp() {
  local p=$here/${pins[$1]}
  case $1 in
  kube | etcd) cat "$p/go.mod" "$p/go.sum" $(ls "$p"/*.go 2>/dev/null) ;;
  kms) cat "$p/go.mod" "$p/go.sum" "$p"/kmsplugin/*.go ;;
  age) cat "$p/go.mod" "$p/go.sum" ;;
  esac | cat - <(echo "$ldflags_version") | sha256sum | cut -d' ' -f1
}
group_bins() {
  case $1 in
  # kube-controller-manager (the storage version migrator's controller) only for the newest
  # pair: the older ones serve no stable StorageVersionMigration API.
  kube) if [ $newest = 1 ]; then echo kube-apiserver kubectl kube-controller-manager; else echo kube-apiserver kubectl; fi ;;
  etcd) echo etcd etcdctl etcdutl ;;
  kms) echo kms-plugin ;;
  age) echo age age-keygen ;;
  esac
}
groups() { if [ $newest = 1 ]; then echo kube etcd kms age; else echo kube etcd; fi; }
# What a matrix pair borrows from the newest pair's folder.
borrowed() { group_bins kms; group_bins age; }
fresh() {
  [ -f "${dir[$1]}/.stamp-$1" ] && [ "$(cat "${dir[$1]}/.stamp-$1")" = "$(stamp "$1")" ] || return 1
  for b in $(group_bins "$1"); do [ -x "${dir[$1]}/$b" ] || return 1; done
}
complete() {
  for g in $(groups); do fresh "$g" || return 1; done
  [ $newest = 1 ] && return 0
  for b in $(borrowed); do [ -x "$out/$b" ] || return 1; done
}
# A matrix pair's folder: symlinks to its parts and to the newest pair's kms-plugin and age tools.
link_pair() {
  mkdir -p "$out"
  for g in kube etcd; do
    for b in $(group_bins $g); do ln -sfn "${dir[$g]}/$b" "$out/$b"; done
  done
  local newest_out
  newest_out=$("$0" --where)
  for b in $(borrowed); do ln -sfn "$newest_out/$b" "$out/$b"; done
}

if [ $where = 1 ]; then
  complete || { echo "the test binaries of Kubernetes $K8S_VERSION + etcd $ETCD_VERSION (and age) are not built: run scripts/k8s/build.sh $kube_pins $etcd_pins" >&2; exit 1; }
  echo "$out"
  exit 0
fi

if [ $newest = 0 ]; then
  # The pair borrows the newest pair's KMS plugin and age tools.
  "$0" >/dev/null
fi
if complete; then
  echo "$out"
  exit 0
fi

command -v go >/dev/null || { echo "go is required to build the test bed (https://go.dev/dl)" >&2; exit 1; }
mkdir -p "$cache_root"
tmp=$(mktemp -d "$cache_root/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
# A private Go build cache, deleted with $tmp (a Kubernetes build leaves about 2 GB in it, of
# no use once the binaries are cached): shared by every pair of one --matrix run.
export GOCACHE=${ATREST_GOCACHE:-$tmp/gocache}
start=$(date +%s)

# build <group> <output name> <package> [ldflags]
build() {
  mkdir -p "${dir[$1]}"
  (cd "$here/${pins[$1]}" && CGO_ENABLED=0 go build -trimpath -buildvcs=false -ldflags "-s -w ${4:-}" -o "$tmp/$2" "$3")
  mv -f "$tmp/$2" "${dir[$1]}/$2"
}

if ! fresh kube; then
  # Same stamping as hack/lib/version.sh, so `kube-apiserver --version` and /version print the release.
  minor=${K8S_VERSION#v*.}; minor=${minor%%.*}
  major=${K8S_VERSION#v}; major=${major%%.*}
  ldflags=""
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.gitCommit=module-$K8S_VERSION"
  done
  what="kube-apiserver and kubectl $K8S_VERSION"
  [ $newest = 0 ] || what="kube-apiserver, kubectl and kube-controller-manager $K8S_VERSION"
  echo "building $what (cold: 4 to 13 minutes on 2 cores)" >&2
  build kube kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver "$ldflags"
  build kube kubectl k8s.io/kubernetes/cmd/kubectl "$ldflags"
  if [ $newest = 1 ]; then
    build kube kube-controller-manager k8s.io/kubernetes/cmd/kube-controller-manager "$ldflags"
  fi
  stamp kube >"${dir[kube]}/.stamp-kube"
fi
if ! fresh etcd; then
  echo "building etcd, etcdctl and etcdutl $ETCD_VERSION" >&2
  # The older pins build etcd through a small main of their own (etcdmain.Main).
  server=go.etcd.io/etcd/server/v3
  [ -f "$here/$etcd_pins/main.go" ] && server=.
  build etcd etcd "$server"
  build etcd etcdctl go.etcd.io/etcd/etcdctl/v3
  build etcd etcdutl go.etcd.io/etcd/etcdutl/v3
  stamp etcd >"${dir[etcd]}/.stamp-etcd"
fi
if [ $newest = 1 ] && ! fresh kms; then
  echo "building the KMS v2 test plugin" >&2
  build kms kms-plugin ./kmsplugin
  stamp kms >"$out/.stamp-kms"
fi
if [ $newest = 1 ] && ! fresh age; then
  echo "building age and age-keygen $(pinned age 'filippo\.io/age')" >&2
  build age age filippo.io/age/cmd/age
  build age age-keygen filippo.io/age/cmd/age-keygen
  stamp age >"$out/.stamp-age"
fi
[ $newest = 1 ] || link_pair
echo "built in $(($(date +%s) - start)) s" >&2
echo "$out"
