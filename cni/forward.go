package cni

import (
	"fmt"
	"time"

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
	a := inv.args
	req := shim.Request(inv.cmd, shim.Args{ContainerID: a.ContainerID, Netns: a.Netns, IfName: a.IfName, Args: a.Args, Path: a.Path,
		NetnsOverride: a.NetnsOverride, StdinData: a.StdinData},
		p.getenv, p.FailAt)
	// As the shim marks it (skel has checked this invocation, so Unchecked stays false): an
	// agent from before requested addresses refuses the field rather than give others.
	req.RequestsAddresses = len(inv.requested) > 0 || inv.cfg.IPsErr != nil
	result, taken, why, cerr := shim.Forward(time.Now().Add(shim.CommandBudget+inv.cfg.PolicySetupTimeout), inv.cfg.NodeSocket, req)
	if !taken {
		p.agentAbsent = !why.AgentUsable
		inv.log.Info("node agent did not take the command; doing it here", "socket", inv.cfg.NodeSocket, "reason", why.Reason)
		return false, nil
	}
	if cerr != nil {
		return true, &types.Error{Code: cerr.Code, Msg: cerr.Msg, Details: cerr.Details}
	}
	if _, err := p.stdout().Write(result); err != nil {
		return true, types.NewError(types.ErrIOFailure, fmt.Sprintf("write result: %v", err), "")
	}
	return true, nil
}
