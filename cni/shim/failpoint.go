//go:build !terrace_failpoints

package shim

// FailPoint is empty in normal builds: TERRACE_CNI_FAIL_AT is honoured only by binaries built
// with -tags terrace_failpoints, so a stray variable can never break a production ADD.
func FailPoint() string { return "" }
