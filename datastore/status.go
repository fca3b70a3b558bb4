package datastore

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// StatusPrefix is where node agents write what they observed (CONVENTIONS.md): never desired state.
const StatusPrefix = "/terrace/status/v1/"

// EndpointStatusPrefix is the prefix under which node's agent reports its workload endpoints.
func EndpointStatusPrefix(node string) string { return StatusPrefix + node + "/endpoints/" }

// EndpointStatusKey is the key felix writes once the policy of a WorkloadEndpoint is programmed:
// /terrace/status/v1/<node>/endpoints/<namespace>/<name>. The namespace is part of it because
// endpoint names are only unique within a namespace; the CNI plugin waits for it.
func EndpointStatusKey(node, namespace, name string) string {
	return EndpointStatusPrefix(node) + namespace + "/" + name
}

// ParseEndpointStatusKey splits a key made by EndpointStatusKey.
func ParseEndpointStatusKey(key string) (node, namespace, name string, err error) {
	rest, ok := strings.CutPrefix(key, StatusPrefix)
	if !ok {
		return "", "", "", fmt.Errorf("parse endpoint status key %q: not under %s", key, StatusPrefix)
	}
	parts := strings.Split(rest, "/")
	if len(parts) != 4 || parts[1] != "endpoints" || parts[0] == "" || parts[2] == "" || parts[3] == "" {
		return "", "", "", fmt.Errorf("parse endpoint status key %q: want <node>/endpoints/<namespace>/<name>", key)
	}
	return parts[0], parts[2], parts[3], nil
}

// EndpointStatus is the value at EndpointStatusKey. Revision is the WorkloadEndpoint's etcd mod
// revision (its resourceVersion) whose policy was programmed: a reader accepts only a status at or
// after the revision it wrote, so a leftover from an earlier endpoint of the same name never counts.
type EndpointStatus struct {
	Programmed bool  `json:"programmed"`
	Revision   int64 `json:"revision"`
}

// Marshal encodes the status as stored.
func (s EndpointStatus) Marshal() []byte {
	// A struct of a bool and an int cannot fail to encode.
	b, _ := json.Marshal(s)
	return b
}

// ParseEndpointStatus decodes a value written at EndpointStatusKey.
func ParseEndpointStatus(data []byte) (EndpointStatus, error) {
	var st EndpointStatus
	if err := json.Unmarshal(data, &st); err != nil {
		return EndpointStatus{}, fmt.Errorf("decode endpoint status: %w", err)
	}
	return st, nil
}

// NodeInstanceKey is where the running terrace-node of a node name says which host it runs on:
// /terrace/status/v1/<node>/instance, bound to a lease that terrace-node keeps alive, so the key
// exists exactly while a daemon holds the name.
func NodeInstanceKey(node string) string { return StatusPrefix + node + "/instance" }

// NodeInstance is the value at NodeInstanceKey. ID identifies the host: a random value kept in its
// state directory, so a restarted daemon is recognised as the same host and takes the name back at
// once, while a daemon with another state directory waits until the holder is gone.
type NodeInstance struct {
	ID       string    `json:"id"`
	Hostname string    `json:"hostname"`
	PID      int       `json:"pid"`
	IPv4     string    `json:"ipv4,omitempty"`
	IPv6     string    `json:"ipv6,omitempty"`
	Since    time.Time `json:"since"`
}

// ParseNodeInstance decodes a value written at NodeInstanceKey.
func ParseNodeInstance(data []byte) (NodeInstance, error) {
	var in NodeInstance
	if err := json.Unmarshal(data, &in); err != nil {
		return NodeInstance{}, fmt.Errorf("decode node instance: %w", err)
	}
	return in, nil
}
