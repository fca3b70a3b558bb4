package felix

import (
	"net/netip"
	"strings"

	"github.com/terracenet/terrace/datastore"
	"github.com/terracenet/terrace/datastore/api"
	"github.com/terracenet/terrace/datastore/kv"
	"github.com/terracenet/terrace/felix/calc"
)

// localEP is a workload endpoint of this node as the agent needs it: its host-side interface
// (for sysctls), the families it uses and the etcd revision whose policy gets reported.
type localEP struct {
	namespace, name string
	iface           string
	v4, v6          bool
	rev             int64
}

// trackEndpoint follows local WorkloadEndpoints: their interfaces get the pure-L3 settings, and
// their revisions are what the status keys report once programmed.
func (a *Agent) trackEndpoint(u datastore.ResourceUpdate) {
	if u.Kind != api.KindWorkloadEndpoint {
		return
	}
	key := u.Namespace + "/" + u.Name
	old, had := a.locals[key]
	var w *api.WorkloadEndpoint
	if u.Type == kv.UpdatePut {
		w, _ = u.Resource.(*api.WorkloadEndpoint)
	}
	if w == nil || w.Spec.Node != a.cfg.NodeName || w.Spec.InterfaceName == "" {
		if had {
			delete(a.locals, key)
			a.releaseIface(old.iface)
		}
		return
	}
	ep := localEP{namespace: u.Namespace, name: u.Name, iface: w.Spec.InterfaceName, rev: u.Revision}
	for _, n := range w.Spec.IPNetworks {
		p, err := netip.ParsePrefix(n)
		if err != nil {
			if ad, err2 := netip.ParseAddr(n); err2 == nil {
				p = netip.PrefixFrom(ad, ad.BitLen())
			} else {
				continue
			}
		}
		if p.Addr().Is4() {
			ep.v4 = true
		} else {
			ep.v6 = true
		}
	}
	if !ep.v4 && !ep.v6 {
		ep.v4 = true
	}
	a.locals[key] = ep
	if had && old.iface != ep.iface {
		a.releaseIface(old.iface)
		had = false
	}
	if !had {
		a.ifUsers[ep.iface]++
	}
	owned := strings.HasPrefix(ep.iface, calc.WorkloadIfacePrefix)
	if !owned {
		// proxy_arp or strict rp_filter on a host interface (an endpoint naming eth0) would
		// disturb the host's own network: only Terrace's interfaces are set up.
		// Logged, not a refused object: that would hold back every endpoint's policy status.
		a.log.Warn("workload endpoint names an interface that is not Terrace's: no routes or interface settings for it",
			"endpoint", key, "interface", ep.iface, "want_prefix", calc.WorkloadIfacePrefix)
	} else if a.dp.Sysctls != nil {
		if err := a.dp.Sysctls.SetInterface(ep.iface, ep.v4, ep.v6); err != nil {
			a.pushErrs[modelObj{kind: objSysctl, name: ep.iface}] = err
		} else {
			delete(a.pushErrs, modelObj{kind: objSysctl, name: ep.iface})
		}
	}
	if owned && (!had || old.rev != ep.rev) {
		// A new revision often means a new pod behind a re-created veth of the same name: its
		// settings and routes died with the old device.
		if a.dp.Sysctls != nil {
			a.dp.Sysctls.InterfaceChanged(ep.iface)
		}
		a.dp.Routes.DeviceChanged(ep.iface)
		if a.dp.FastPath != nil {
			a.dp.FastPath.DeviceChanged(ep.iface)
		}
	}
}

func (a *Agent) releaseIface(iface string) {
	a.ifUsers[iface]--
	if a.ifUsers[iface] > 0 {
		return
	}
	delete(a.ifUsers, iface)
	delete(a.pushErrs, modelObj{kind: objSysctl, name: iface})
	if a.dp.Sysctls != nil {
		a.dp.Sysctls.RemoveInterface(iface)
	}
}

// statusSnapshot is the status of every local workload endpoint: key => the revision whose
// policy is in the kernel. An endpoint whose families' policy is all in (ok) reports its current
// revision; any other keeps what it reported before, if anything, so an ip6tables failure does
// not hold back IPv4-only pods, and no pod is reported programmed before its policy is.
func (a *Agent) statusSnapshot(ok familiesOK) map[string]int64 {
	out := make(map[string]int64, len(a.locals))
	for _, ep := range a.locals {
		key := datastore.EndpointStatusKey(a.cfg.NodeName, ep.namespace, ep.name)
		if (!ep.v4 || ok.v4) && (!ep.v6 || ok.v6) {
			out[key] = ep.rev
		} else if rev, had := a.reported[key]; had {
			out[key] = rev
		}
	}
	a.reported = out
	return out
}
