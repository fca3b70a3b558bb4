//go:build terrace_failpoints

package shim

import "os"

// EnvFailAt names the ADD step to fail at in test builds: ipam, veth, host, pod, route, endpoint, policy.
const EnvFailAt = "TERRACE_CNI_FAIL_AT"

// FailPoint names the step of ADD to fail at, from the environment.
func FailPoint() string { return os.Getenv(EnvFailAt) }
