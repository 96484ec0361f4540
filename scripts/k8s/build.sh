#!/usr/bin/env bash
# Builds the real Kubernetes and etcd binaries the test bed runs, from their Go modules,
# into a cache outside the repository, and prints the folder that holds them.
#
#   scripts/k8s/build.sh          build when missing or when the pins changed; print the folder
#   scripts/k8s/build.sh --where  only print the folder (exit 1 when it is not built yet)
#
# The folder is ${XDG_CACHE_HOME:-$HOME/.cache}/atrest/k8s/<kubernetes version>/ and holds
# kube-apiserver, kubectl, etcd, etcdctl, etcdutl and kms-plugin. Stamp files record a hash of
# the pins (go.mod, go.sum) per group of binaries; a different hash rebuilds that group.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
K8S_VERSION=$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v/ {print $2; exit}' "$here/kube/go.mod")
[ -n "$K8S_VERSION" ] || { echo "no k8s.io/kubernetes version in $here/kube/go.mod" >&2; exit 1; }
cache_root=${XDG_CACHE_HOME:-$HOME/.cache}/atrest/k8s
out=$cache_root/$K8S_VERSION


# Each group of binaries is rebuilt when its own pins change.
stamp() {
  case $1 in
  kube) cat "$here/kube/go.mod" "$here/kube/go.sum" ;;
  etcd) cat "$here/etcd/go.mod" "$here/etcd/go.sum" ;;
  kms) cat "$here/kube/go.mod" "$here/kube/go.sum" "$here"/kube/kmsplugin/*.go ;;
  esac | cat - <(echo "$ldflags_version") | sha256sum | cut -d' ' -f1
}
group_bins() {
  case $1 in kube) echo kube-apiserver kubectl ;; etcd) echo etcd etcdctl etcdutl ;; kms) echo kms-plugin ;; esac
}
fresh() {
  [ -f "$out/.stamp-$1" ] && [ "$(cat "$out/.stamp-$1")" = "$(stamp "$1")" ] || return 1
  for b in $(group_bins "$1"); do [ -x "$out/$b" ] || return 1; done
}
complete() { fresh kube && fresh etcd && fresh kms; }
ldflags_version=3

if [ "${1:-}" = "--where" ]; then
  complete || { echo "Kubernetes test binaries are not built: run scripts/k8s/build.sh" >&2; exit 1; }
  echo "$out"
  exit 0
fi

if complete; then
  echo "$out"
  exit 0
fi

command -v go >/dev/null || { echo "go is required to build the test bed (https://go.dev/dl)" >&2; exit 1; }
mkdir -p "$out"
tmp=$(mktemp -d "$cache_root/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
start=$(date +%s)

# build <dir> <output name> <package>
build() {
  (cd "$here/$1" && CGO_ENABLED=0 go build -trimpath -buildvcs=false -ldflags "-s -w ${4:-}" -o "$tmp/$2" "$3")
  mv -f "$tmp/$2" "$out/$2"
}

if ! fresh kube; then
  # Same stamping as hack/lib/version.sh, so `kube-apiserver --version` prints the release.
  minor=${K8S_VERSION#v*.}; minor=${minor%%.*}
  major=${K8S_VERSION#v}; major=${major%%.*}
  ldflags=""
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.gitCommit=module-$K8S_VERSION"
  done
  echo "building kube-apiserver and kubectl $K8S_VERSION (cold: tens of minutes on 2 cores)" >&2
  build kube kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver "$ldflags"
  build kube kubectl k8s.io/kubernetes/cmd/kubectl "$ldflags"
  stamp kube >"$out/.stamp-kube"
fi
if ! fresh etcd; then
  echo "building etcd, etcdctl and etcdutl" >&2
  build etcd etcd go.etcd.io/etcd/server/v3
  build etcd etcdctl go.etcd.io/etcd/etcdctl/v3
  build etcd etcdutl go.etcd.io/etcd/etcdutl/v3
  stamp etcd >"$out/.stamp-etcd"
fi
if ! fresh kms; then
  echo "building the KMS v2 test plugin" >&2
  build kube kms-plugin ./kmsplugin
  stamp kms >"$out/.stamp-kms"
fi
echo "built in $(($(date +%s) - start)) s" >&2
echo "$out"
