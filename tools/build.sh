#!/usr/bin/env bash
# Build the real servers and tools the integration tests run (kube-apiserver,
# kubelet, etcd, consul, h2spec) from their Go modules, once, into a cache outside the
# repo keyed by version. A cached binary is never rebuilt. Each has its own
# build module here (tools/k8s, tools/etcd, tools/consul, tools/h2spec) so the
# project's go.mod never sees their dependency graphs. kubelet comes from the
# same module and version as kube-apiserver (tools/k8s).
#
#   tools/build.sh [k8s|kubelet|etcd|consul|h2spec ...]   (default: all)
#   prints nothing but progress; binaries land in $(tools/build.sh --dir)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cache="${ATTACHE_TOOLS:-$HOME/.cache/attache-tools}"

K8S=v1.34.4
ETCD=v3.6.4
CONSUL=v1.22.7
H2SPEC=v2.2.1

if [ "${1:-}" = --dir ]; then echo "$cache/bin"; exit 0; fi
mkdir -p "$cache/bin"

# build NAME VERSION MODULE_DIR PACKAGE LDFLAGS: go build into the cache
# under NAME-VERSION, then link NAME to it, so a version bump rebuilds.
build() {
	local name=$1 version=$2 dir=$3 pkg=$4 ld=$5 out="$cache/bin/$1-$2"
	if [ -x "$out" ]; then ln -sf "$name-$version" "$cache/bin/$name"; return; fi
	echo "tools: building $name $version (cached in $cache/bin)" >&2
	local t0=$SECONDS
	(cd "$here/$dir" && go build -trimpath -ldflags "$ld" -o "$out.tmp.$$" "$pkg")
	mv "$out.tmp.$$" "$out" # its own temporary name: two builds at once each move a whole file
	ln -sf "$name-$version" "$cache/bin/$name"
	echo "tools: $name $version built in $((SECONDS - t0)) s" >&2
}

k8s_ldflags() {
	local ld="-s -w" p
	for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		ld="$ld -X $p.gitVersion=$K8S -X $p.gitMajor=1 -X $p.gitMinor=34 -X $p.gitTreeState=clean"
	done
	echo "$ld"
}
k8s() { build kube-apiserver $K8S k8s k8s.io/kubernetes/cmd/kube-apiserver "$(k8s_ldflags)"; }
kubelet() { build kubelet $K8S k8s k8s.io/kubernetes/cmd/kubelet "$(k8s_ldflags)"; }
etcd() { build etcd $ETCD etcd go.etcd.io/etcd/server/v3 "-s -w"; }
consul() {
	build consul $CONSUL consul github.com/hashicorp/consul \
		"-s -w -X github.com/hashicorp/consul/version.GitCommit=$CONSUL"
}

h2spec() {
	build h2spec $H2SPEC h2spec github.com/summerwind/h2spec/cmd/h2spec \
		"-s -w -X main.VERSION=${H2SPEC#v} -X main.COMMIT=$H2SPEC"
}

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(etcd k8s kubelet consul h2spec)
for t in "${targets[@]}"; do
	case $t in
	k8s | kubelet | etcd | consul | h2spec) "$t" ;;
	*) echo "tools: unknown target $t (k8s, kubelet, etcd, consul, h2spec)" >&2; exit 2 ;;
	esac
done
