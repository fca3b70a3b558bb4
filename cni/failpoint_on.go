//go:build terrace_failpoints

package cni

import (
	"os"

	"github.com/terracenet/terrace/cni/shim"
)

// EnvFailAt names the ADD step to fail at in test builds: ipam, veth, host, pod, route, endpoint, policy.
const EnvFailAt = shim.EnvFailAt

func failpoint() string { return os.Getenv(EnvFailAt) }
