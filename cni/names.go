package cni

import (
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
)

// Fixed addresses of the pure-L3 wiring (CONVENTIONS.md). The host side answers ARP for the IPv4
// gateway through proxy_arp; the IPv6 gateway is the EUI-64 link-local address of HostMAC, which
// the plugin adds to the host side itself, since only hosts whose addr_gen_mode is EUI-64 would
// derive it.
const (
	HostMAC     = "ee:ee:ee:ee:ee:ee"
	GatewayIPv4 = "169.254.1.1"
	GatewayIPv6 = "fe80::ecee:eeff:feee:eeee"
	// RouteProtocol marks routes to local workloads as Terrace's (CONVENTIONS.md); felix adopts the
	// route the plugin writes because it carries this protocol.
	RouteProtocol = 80
	// HostIfPrefix starts every host-side workload interface name.
	HostIfPrefix = "trc"
)

// HostInterfaceName is the host side of a workload's veth: "trc" + the first 11 hex characters of
// sha1(network name + "." + container ID + "." + pod interface name). The network name is part of
// the identity so two networks attaching the same container never collide, and the pod interface
// name so one container may have several attachments. DEL recomputes it, which is why it must
// depend on nothing DEL does not know.
func HostInterfaceName(network, containerID, ifName string) string {
	sum := sha1.Sum([]byte(network + "." + containerID + "." + ifName))
	return HostIfPrefix + hex.EncodeToString(sum[:])[:11]
}

// HandleID is the IPAM handle of an attachment, (containerID, ifName) as the CNI spec identifies
// it: "<network>.<containerID>" for eth0, as Calico names it, and "<network>.<containerID>.<ifName>"
// for any other interface, so a container attached to one network twice (Multus) holds two
// handles and the DEL of one attachment never frees the other's addresses.
func HandleID(network, containerID, ifName string) string {
	if ifName == "" || ifName == "eth0" {
		return network + "." + containerID
	}
	return network + "." + containerID + "." + ifName
}

// Orchestrator names written into WorkloadEndpoints.
const (
	OrchestratorK8s = "k8s"
	OrchestratorCNI = "cni"
)

// WorkloadEndpointName is the deterministic name of an attachment's WorkloadEndpoint:
// "<node>-<orchestrator>-<pod>-<ifname>", each part lower-cased with every character outside
// [a-z0-9.] replaced by '-' and every '-' doubled (Calico's escaping, so "a-b" + "c" and "a" +
// "b-c" stay different). When the result is not an RFC 1123 subdomain (a 64-character container
// ID as pod name makes a label longer than 63), it becomes a readable prefix of at most 52
// characters + "-" + 10 hex characters of sha1 of the full name: still deterministic, still unique.
func WorkloadEndpointName(node, orchestrator, pod, ifName string) string {
	full := strings.Join([]string{escapeNamePart(node), escapeNamePart(orchestrator), escapeNamePart(pod), escapeNamePart(ifName)}, "-")
	if isSubdomain(full) {
		return full
	}
	sum := sha1.Sum([]byte(full))
	prefix := strings.Map(func(r rune) rune {
		if r == '.' {
			return '-'
		}
		return r
	}, full)
	if len(prefix) > 52 {
		prefix = prefix[:52]
	}
	prefix = strings.Trim(prefix, "-")
	if prefix == "" {
		prefix = "wep"
	}
	return prefix + "-" + hex.EncodeToString(sum[:])[:10]
}

func escapeNamePart(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '.':
			b.WriteRune(r)
		default:
			b.WriteString("--")
		}
	}
	return b.String()
}

// isSubdomain reports whether s is an RFC 1123 subdomain, the form resource names must take.
func isSubdomain(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, l := range strings.Split(s, ".") {
		if l == "" || len(l) > 63 || !alnum(l[0]) || !alnum(l[len(l)-1]) {
			return false
		}
		for i := 0; i < len(l); i++ {
			if !alnum(l[i]) && l[i] != '-' {
				return false
			}
		}
	}
	return true
}

func alnum(c byte) bool { return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' }

// The endpoint status key and value are defined in package datastore (shared with felix, which
// writes them); they are repeated here, checked equal by a test, because importing datastore would
// link the etcd client into the plugin, and its initialisation is a large part of the cost of a
// plugin process that talks only to the node agent.

// endpointStatusPrefix is datastore.StatusPrefix.
const endpointStatusPrefix = "/terrace/status/v1/"

// EndpointStatusKey is where the node agent reports an endpoint's policy programmed:
// /terrace/status/v1/<node>/endpoints/<namespace>/<name> (datastore.EndpointStatusKey); ADD waits
// for it when policy_setup_timeout_seconds is set.
func EndpointStatusKey(node, namespace, name string) string {
	return endpointStatusPrefix + node + "/endpoints/" + namespace + "/" + name
}

// parseEndpointStatusKey splits a key made by EndpointStatusKey (datastore.ParseEndpointStatusKey).
func parseEndpointStatusKey(key string) (node, namespace, name string, err error) {
	rest, ok := strings.CutPrefix(key, endpointStatusPrefix)
	if !ok {
		return "", "", "", fmt.Errorf("parse endpoint status key %q: not under %s", key, endpointStatusPrefix)
	}
	parts := strings.Split(rest, "/")
	if len(parts) != 4 || parts[1] != "endpoints" || parts[0] == "" || parts[2] == "" || parts[3] == "" {
		return "", "", "", fmt.Errorf("parse endpoint status key %q: want <node>/endpoints/<namespace>/<name>", key)
	}
	return parts[0], parts[2], parts[3], nil
}

// EndpointStatus is the value at EndpointStatusKey: {"programmed":true,"revision":N}
// (datastore.EndpointStatus). ADD accepts it only when Revision is at least the WorkloadEndpoint's
// resourceVersion as ADD wrote it, so a status left from an earlier endpoint of the same name
// never counts.
type EndpointStatus struct {
	Programmed bool  `json:"programmed"`
	Revision   int64 `json:"revision"`
}

// ParseEndpointStatus decodes a value written at EndpointStatusKey.
func ParseEndpointStatus(data []byte) (EndpointStatus, error) {
	var st EndpointStatus
	if err := json.Unmarshal(data, &st); err != nil {
		return EndpointStatus{}, fmt.Errorf("decode endpoint status: %w", err)
	}
	return st, nil
}
