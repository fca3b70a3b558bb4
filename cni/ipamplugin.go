package cni

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
)

// IPAMPlugin is terrace-ipam: the address half of the plugin alone, for other CNI plugins to
// delegate to. It shares the configuration keys of the "ipam" section. Its result is host
// addresses (/32, /128) with no gateway or routes, as Calico's IPAM: it suits a plugin that routes
// each address itself and sets its own gateway; ptp, bridge and macvlan expect a subnet and a
// gateway from IPAM and do not work with it.
type IPAMPlugin struct{ *Plugin }

// Add assigns addresses under the attachment's handle (HandleID) and returns them.
func (p IPAMPlugin) Add(args *skel.CmdArgs) error {
	inv, err := p.begin("IPAM-ADD", args)
	if err != nil {
		return err
	}
	defer inv.done()
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	be, err := p.connect(ctx, inv)
	if err != nil {
		return err
	}
	defer be.Close()
	held, err := be.HandleAddrs(ctx, inv.handle)
	if err != nil {
		return toCNIError(fmt.Errorf("read IPAM handle %s: %w", inv.handle, err))
	}
	if len(held) > 0 {
		// A repeated ADD gets what the handle already holds instead of a second address.
		v4, v6 := splitFamilies(held)
		inv.log.Info("IPAM ADD repeated; returning the handle's addresses", "ips", held)
		return p.print(BuildIPAMResult(v4, v6), inv.cfg.CNIVersion)
	}
	req := AssignRequest{
		Node: inv.cfg.Node, Handle: inv.handle,
		// ipamOnly: the calling plugin writes no WorkloadEndpoint, so IPAM's leak check must not
		// take the missing one for a dead pod.
		Attrs:     map[string]string{"namespace": inv.namespace, "pod": inv.podName, "containerID": args.ContainerID, "ifname": args.IfName, "ipamOnly": "true"},
		IPv4Pools: inv.cfg.IPv4Pools, IPv6Pools: inv.cfg.IPv6Pools,
	}
	inv.assignCounts(&req)
	start := time.Now()
	v4, v6, err := be.AutoAssign(ctx, req)
	if err != nil {
		inv.log.Error("IPAM ADD failed", "err", err)
		return toCNIError(fmt.Errorf("assign %s (handle %s): %w", inv.assignWhat(), inv.handle, err))
	}
	if err := p.print(BuildIPAMResult(v4, v6), inv.cfg.CNIVersion); err != nil {
		// The caller never learns the addresses, so they must not stay assigned.
		uctx, ucancel := context.WithTimeout(context.Background(), undoTimeout)
		defer ucancel()
		return errors.Join(fmt.Errorf("print result: %w", err), be.ReleaseIPs(uctx, slices.Concat(v4, v6)...))
	}
	inv.log.Info("IPAM ADD done", "ips", slices.Concat(v4, v6), "took", time.Since(start))
	return nil
}

// Del releases the handle's addresses; an unknown handle is success.
func (p IPAMPlugin) Del(args *skel.CmdArgs) error {
	inv, err := p.begin("IPAM-DEL", args)
	if err != nil {
		return err
	}
	defer inv.done()
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	be, err := p.connect(ctx, inv)
	if err != nil {
		return err
	}
	defer be.Close()
	if err := be.ReleaseHandle(ctx, inv.handle); err != nil {
		return toCNIError(fmt.Errorf("release addresses of %s: %w", inv.handle, err))
	}
	inv.log.Info("IPAM DEL done")
	return nil
}

// Check verifies that the handle still holds every address of the previous result.
func (p IPAMPlugin) Check(args *skel.CmdArgs) error {
	inv, err := p.begin("IPAM-CHECK", args)
	if err != nil {
		return err
	}
	defer inv.done()
	prev, err := prevResult(args.StdinData)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	be, err := p.connect(ctx, inv)
	if err != nil {
		return err
	}
	defer be.Close()
	held, err := be.HandleAddrs(ctx, inv.handle)
	if err != nil {
		return toCNIError(fmt.Errorf("read IPAM handle %s: %w", inv.handle, err))
	}
	for _, ipc := range prev.IPs {
		a, err := addrOf(ipc.Address.IP)
		if err != nil {
			return types.NewError(types.ErrDecodingFailure, err.Error(), "")
		}
		if !slices.Contains(held, a) {
			return cniErrorf(CodeCheckFailed, "IPAM does not hold %s for handle %s", a, inv.handle)
		}
	}
	return nil
}

// Status: the IPAM plugin needs only the datastore.
func (p IPAMPlugin) Status(args *skel.CmdArgs) error {
	cfg, err := ParseConfig(args.StdinData, p.getenv, p.hostname)
	if err != nil {
		return err
	}
	log, done := p.logger(cfg)
	defer done()
	ctx, cancel := context.WithTimeout(context.Background(), statusTimeout)
	defer cancel()
	be, err := p.Connect(ctx, cfg.Etcd, log)
	if errors.Is(err, ErrBadDatastoreConfig) {
		return connectError(cfg, err)
	}
	if err != nil {
		return cniErrorf(types.ErrPluginNotAvailable, "datastore %v unreachable: %v", cfg.Etcd.Endpoints, err)
	}
	return be.Close()
}

// GC releases this node's addresses under this network's handles whose container is not in
// cni.dev/valid-attachments. Endpoints are not the IPAM plugin's; the main plugin's GC handles them.
func (p IPAMPlugin) GC(args *skel.CmdArgs) error {
	cfg, err := ParseConfig(args.StdinData, p.getenv, p.hostname)
	if err != nil {
		return err
	}
	attachments, err := cfg.gcAttachments()
	if err != nil {
		return err
	}
	log, done := p.logger(cfg)
	defer done()
	ctx, cancel := context.WithTimeout(context.Background(), 2*opTimeout)
	defer cancel()
	be, err := p.Connect(ctx, cfg.Etcd, log)
	if err != nil {
		return connectError(cfg, err)
	}
	defer be.Close()
	if err := releaseStale(ctx, be, cfg, attachments, log); err != nil {
		return toCNIError(err)
	}
	return nil
}
