package cni

import (
	"os"
	"path/filepath"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/version"
)

// SupportedVersions are the CNI spec versions the plugins answer for.
var SupportedVersions = version.PluginSupports("0.4.0", "1.0.0", "1.1.0")

// Main runs the plugin the executable's name asks for: terrace-ipam is the IPAM plugin alone
// (bin/terrace-ipam is a link to terrace-cni), anything else the full plugin. It never returns
// on error: skel prints the CNI error JSON on stdout and exits 1.
// later, if not nil, is Plugin.ConnectLater.
func Main(connect, later Connector, dp Dataplane) {
	// A fallback process was started because the agent did not answer (or the command needs etcd
	// itself): asking the agent again would only add its probe timeout.
	p := &Plugin{Connect: connect, ConnectLater: later, Dataplane: dp, UseAgent: os.Getenv(FallbackEnv) == "", FailAt: failpoint()}
	if filepath.Base(os.Args[0]) == IPAMType {
		ip := IPAMPlugin{p}
		skel.PluginMainFuncs(skel.CNIFuncs{Add: ip.Add, Del: ip.Del, Check: ip.Check, Status: ip.Status, GC: ip.GC},
			SupportedVersions, "terrace-ipam: Terrace IPAM plugin")
		return
	}
	skel.PluginMainFuncs(skel.CNIFuncs{Add: p.Add, Del: p.Del, Check: p.Check, Status: p.Status, GC: p.GC},
		SupportedVersions, "terrace-cni: Terrace pure-L3 CNI plugin")
}
