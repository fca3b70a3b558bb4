package cni

import (
	"context"
	"fmt"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/terracenet/terrace/cni/shim"
)

// viaAgent hands the whole command to the node agent (agentrun.go) the way terrace-cni does, and
// prints its outcome; terrace-cni-etcd run as the plugin itself (not as the shim's fallback) uses
// it. handled is false when the agent did not take the command, which then runs here; nothing
// has been changed in that case.
func (p *Plugin) viaAgent(inv *invocation) (handled bool, err error) {
	if !p.UseAgent || p.InAgent {
		return false, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), shim.CommandBudget+inv.cfg.PolicySetupTimeout)
	defer cancel()
	result, taken, why, err := shim.Forward(ctx, inv.cfg.NodeSocket, shim.Request(inv.cmd, inv.args, p.getenv, p.FailAt))
	if !taken {
		p.agentAbsent = !why.AgentUsable
		inv.log.Info("node agent did not take the command; doing it here", "socket", inv.cfg.NodeSocket, "reason", why.Reason)
		return false, nil
	}
	if err != nil {
		return true, err
	}
	if _, err := p.stdout().Write(result); err != nil {
		return true, types.NewError(types.ErrIOFailure, fmt.Sprintf("write result: %v", err), "")
	}
	return true, nil
}
