package cni

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
)

// statusTimeout bounds STATUS: a runtime asks often and must get an answer quickly.
const statusTimeout = 3 * time.Second

// prevResult decodes the prevResult a runtime passes to CHECK.
func prevResult(stdin []byte) (*current.Result, error) {
	res, err := addPrevResult(stdin)
	if err == nil && res == nil {
		return nil, cniErrorf(types.ErrInvalidNetworkConfig, "CHECK needs prevResult in the network configuration")
	}
	return res, err
}

// Check implements CNI CHECK: the kernel and the datastore must still hold what ADD made and what
// the previous result says.
func (p *Plugin) Check(args *skel.CmdArgs) error {
	inv, err := p.begin("CHECK", args)
	if err != nil {
		return err
	}
	defer inv.done()
	if handled, err := p.viaAgent(inv); handled {
		return err
	}
	prev, err := prevResult(args.StdinData)
	if err != nil {
		return err
	}
	v4, v6, err := resultAddrs(prev, args.IfName)
	if err != nil {
		return types.NewError(types.ErrDecodingFailure, err.Error(), "")
	}
	var problems []error
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	be, err := p.connect(ctx, inv)
	if err != nil {
		return err
	}
	defer be.Close()
	// What this plugin made is the endpoint's addresses; the previous result must hold them, and
	// may hold more: a plugin later in the chain may have added an address to the interface,
	// which the spec says CHECK must allow.
	want := slices.Concat(v4, v6)
	wep, err := be.GetEndpoint(ctx, inv.namespace, inv.wepName)
	switch {
	case errors.Is(err, ErrNotFound):
		problems = append(problems, fmt.Errorf("workload endpoint %s/%s does not exist", inv.namespace, inv.wepName))
	case err != nil:
		return toCNIError(fmt.Errorf("read workload endpoint: %w", err))
	default:
		if wep.Spec.ContainerID != args.ContainerID {
			problems = append(problems, fmt.Errorf("workload endpoint %s/%s belongs to container %s", inv.namespace, inv.wepName, wep.Spec.ContainerID))
		}
		if wep.Spec.InterfaceName != inv.hostIf || wep.Spec.Endpoint != args.IfName || wep.Spec.Node != inv.cfg.Node {
			problems = append(problems, fmt.Errorf("workload endpoint %s/%s names node %s interfaces %s/%s, want %s %s/%s",
				inv.namespace, inv.wepName, wep.Spec.Node, wep.Spec.InterfaceName, wep.Spec.Endpoint, inv.cfg.Node, inv.hostIf, args.IfName))
		}
		e4, e6, err := endpointAddrs(wep)
		switch {
		case err != nil:
			problems = append(problems, err)
		case len(e4)+len(e6) == 0:
			problems = append(problems, fmt.Errorf("workload endpoint %s/%s has no addresses", inv.namespace, inv.wepName))
		default:
			for _, ip := range slices.Concat(e4, e6) {
				if !slices.Contains(want, ip) {
					problems = append(problems, fmt.Errorf("workload endpoint has address %s, which the previous result does not give %s", ip, args.IfName))
				}
			}
			v4, v6, want = e4, e6, slices.Concat(e4, e6)
		}
	}
	w := Wiring{NetNS: p.netnsPath(args), PodIf: args.IfName, HostIf: inv.hostIf, MTU: inv.cfg.MTU, IPv4: v4, IPv6: v6}
	if err := p.Dataplane.Verify(w); err != nil {
		if errors.Is(err, ErrNetNSMissing) {
			if p.InAgent {
				return errNetNSUnseen
			}
			return cniErrorf(types.ErrUnknownContainer, "the pod's network namespace %q does not exist", args.Netns)
		}
		problems = append(problems, err)
	}
	held, err := be.HandleAddrs(ctx, inv.handle)
	if err != nil {
		return toCNIError(fmt.Errorf("read IPAM handle %s: %w", inv.handle, err))
	}
	for _, ip := range want {
		if !slices.Contains(held, ip) {
			problems = append(problems, fmt.Errorf("IPAM does not hold %s for handle %s", ip, inv.handle))
		}
	}
	if len(problems) > 0 {
		err := errors.Join(problems...)
		inv.log.Warn("CHECK failed", "err", err)
		return cniErrorf(CodeCheckFailed, "check of %s failed: %s", inv.hostIf, strings.ReplaceAll(err.Error(), "\n", "; "))
	}
	inv.log.Debug("CHECK passed")
	return nil
}

// Status implements CNI STATUS: ready only when the datastore answers and the node agent is up,
// because an ADD would otherwise fail or make a pod whose policy nobody programs.
func (p *Plugin) Status(args *skel.CmdArgs) error {
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
		log.Warn("STATUS: datastore unreachable", "err", err)
		return cniErrorf(types.ErrPluginNotAvailable, "datastore %v unreachable: %v", cfg.Etcd.Endpoints, err)
	}
	be.Close()
	if err := queryNodeAgent(ctx, cfg.NodeSocket); err != nil {
		log.Warn("STATUS: node agent not answering", "err", err)
		return cniErrorf(types.ErrPluginNotAvailable, "node agent not running: %v", err)
	}
	return nil
}

// queryNodeAgent asks the node agent's local API for GET /v1/status.
func queryNodeAgent(ctx context.Context, socket string) error {
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", socket)
	}}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://terrace-node/v1/status", nil)
	if err != nil {
		return fmt.Errorf("build status request: %w", err)
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return fmt.Errorf("query %s: %w", socket, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("query %s: %s", socket, resp.Status)
	}
	return nil
}

// GC implements CNI GC: endpoints of this node and network, and addresses of this node under this
// network's handles, whose attachment is not in cni.dev/valid-attachments are removed.
func (p *Plugin) GC(args *skel.CmdArgs) error {
	// A clean-up, read as leniently as DEL: a setting only ADD uses must not stop it.
	cfg, err := ParseConfigForDel(args.StdinData, p.getenv, p.hostname)
	if err != nil {
		return err
	}
	attachments, err := cfg.gcAttachments()
	if err != nil {
		return err
	}
	log, done := p.logger(cfg)
	defer done()
	log = log.With("cmd", "GC", "network", cfg.Network)
	ctx, cancel := context.WithTimeout(context.Background(), 2*opTimeout)
	defer cancel()
	be, err := p.Connect(ctx, cfg.Etcd, log)
	if err != nil {
		return connectError(cfg, err)
	}
	defer be.Close()
	valid := map[types.GCAttachment]bool{}
	for _, a := range attachments {
		valid[a] = true
	}
	var errs []error
	weps, err := be.ListEndpoints(ctx)
	if err != nil {
		return toCNIError(fmt.Errorf("list workload endpoints: %w", err))
	}
	removed := 0
	// Attachments whose veth stays: their endpoint and addresses are kept (as DEL keeps the
	// addresses), so the address is not handed to a new pod while the host still routes it to
	// the old veth, and a later GC finds the endpoint and tries again.
	vethLeft := map[types.GCAttachment]bool{}
	for _, w := range weps {
		if w.Spec.Node != cfg.Node || w.Metadata.Annotations[AnnotationNetwork] != cfg.Network {
			continue
		}
		att := types.GCAttachment{ContainerID: w.Spec.ContainerID, IfName: w.Spec.Endpoint}
		if valid[att] {
			continue
		}
		log.Info("GC: removing stale attachment", "endpoint", w.Metadata.Namespace+"/"+w.Metadata.Name, "containerID", w.Spec.ContainerID)
		// The interface ADD made for this attachment, not whatever name the stored endpoint
		// carries: GC deletes only what this plugin created.
		if err := p.Dataplane.Remove(HostInterfaceName(cfg.Network, w.Spec.ContainerID, w.Spec.Endpoint)); err != nil {
			errs = append(errs, fmt.Errorf("remove veth of %s/%s: %w", w.Metadata.Namespace, w.Metadata.Name, err))
			vethLeft[att] = true
			log.Warn("GC: veth not removed; keeping the endpoint and its addresses for a later GC or DEL", "endpoint", w.Metadata.Namespace+"/"+w.Metadata.Name)
			continue
		}
		if err := be.DeleteEndpoint(ctx, w.Metadata.Namespace, w.Metadata.Name, w.Metadata.ResourceVersion); err != nil && !errors.Is(err, ErrNotFound) {
			errs = append(errs, fmt.Errorf("delete workload endpoint %s/%s: %w", w.Metadata.Namespace, w.Metadata.Name, err))
		}
		removed++
	}
	keep := attachments
	for a := range vethLeft {
		keep = append(keep, a)
	}
	if err := releaseStale(ctx, be, cfg, keep, log); err != nil {
		errs = append(errs, err)
	}
	log.Info("GC done", "endpoints", removed, "errors", len(errs))
	if len(errs) > 0 {
		return toCNIError(errors.Join(errs...))
	}
	return nil
}

// releaseStale releases this node's addresses under this network's handles whose attachment is
// not among the valid ones. An allocation belongs to this network only if its handle is exactly
// the one this network gives the attachment its attributes name: network names may contain dots,
// so cutting "<network>." off a handle would take network "pods" for "pods.v6" and free that
// network's live addresses.
func releaseStale(ctx context.Context, be Backend, cfg *Config, attachments []types.GCAttachment, log *slog.Logger) error {
	valid := map[types.GCAttachment]bool{}
	validCID := map[string]bool{}
	for _, a := range attachments {
		valid[a] = true
		validCID[a.ContainerID] = true
	}
	allocs, err := be.NodeAllocations(ctx, cfg.Node)
	if err != nil {
		return fmt.Errorf("list allocations of %s: %w", cfg.Node, err)
	}
	var errs []error
	released := map[string]bool{}
	for _, a := range allocs {
		cid, ifName := a.Attrs["containerID"], a.Attrs["ifname"]
		if ifName == "" {
			ifName = "eth0"
		}
		if cid == "" || released[a.Handle] {
			continue
		}
		switch a.Handle {
		case HandleID(cfg.Network, cid, ifName):
			if valid[types.GCAttachment{ContainerID: cid, IfName: ifName}] {
				continue
			}
		case HandleID(cfg.Network, cid, "eth0"):
			// Made before handles were per attachment: one handle for every interface of the
			// container, kept while any of them is valid.
			if validCID[cid] {
				continue
			}
		default:
			continue // another network's
		}
		released[a.Handle] = true
		log.Info("GC: releasing leaked addresses", "handle", a.Handle, "ip", a.IP)
		if err := be.ReleaseHandle(ctx, a.Handle); err != nil {
			errs = append(errs, fmt.Errorf("release %s: %w", a.Handle, err))
		}
	}
	return errors.Join(errs...)
}
