//go:build terrace_agentonly

package main

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/terracenet/terrace/cni"
)

// connect of a plugin built with -tags terrace_agentonly: no etcd client is linked, which makes
// each plugin process much cheaper to start (the etcd, gRPC and protobuf packages' initialisation
// is most of it), at the price of needing the node agent for every command; GC and STATUS,
// which read etcd directly, report the datastore unavailable.
func connect(context.Context, cni.EtcdConfig, *slog.Logger) (cni.Backend, error) {
	return nil, fmt.Errorf("%w: this terrace-cni is built without direct etcd access (terrace_agentonly) and the node agent did not answer", cni.ErrUnavailable)
}
