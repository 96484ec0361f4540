//go:build tools

// Keeps etcdctl and etcdutl of the same release in go.mod (built by scripts/k8s/build.sh).
package main

import (
	_ "go.etcd.io/etcd/etcdctl/v3"
	_ "go.etcd.io/etcd/etcdutl/v3"
)
