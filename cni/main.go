package cni

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/terracenet/terrace/cni/shim"
)

// SupportedVersions are the CNI spec versions the plugins answer for.
var SupportedVersions = version.PluginSupports(shim.SupportedVersions...)

// checkNetnsEnv deals with a CNI_NETNS that leads to something other than a namespace before skel
// sees it: skel opens the path after ADD and DEL to compare it with the plugin's own, and opening
// a FIFO blocks until something writes to it. ADD and CHECK fail (code 4, invalid environment);
// DEL goes on as for a namespace already gone.
func checkNetnsEnv() {
	path := os.Getenv("CNI_NETNS")
	cmd := os.Getenv("CNI_COMMAND")
	if path == "" || (cmd != "ADD" && cmd != "CHECK" && cmd != "DEL") {
		return
	}
	var nn *notNamespaceError
	if err := checkNetnsPath(path); !errors.As(err, &nn) {
		return
	}
	if cmd == "DEL" {
		os.Setenv("CNI_NETNS", "")
		return
	}
	e := types.NewError(types.ErrInvalidEnvironmentVariables, "CNI_NETNS: "+nn.Error(), "")
	if err := e.Print(); err != nil {
		fmt.Fprintln(os.Stderr, e.Error())
	}
	os.Exit(1)
}

// Main runs the complete plugin (terrace-cni-etcd) as the executable's name asks: terrace-ipam is
// the IPAM plugin alone, anything else the full plugin. It never returns on error: skel prints the
// CNI error JSON on stdout and exits 1.
func Main(connect Connector, dp Dataplane) {
	// Started by the shim because the agent did not answer: asking it again would only cost
	// another wait. Started for a command the shim does not send: the agent may serve its calls.
	p := &Plugin{Connect: connect, Dataplane: dp, UseAgent: os.Getenv(shim.FallbackEnv) != shim.FallbackNoAgent, FailAt: shim.FailPoint()}
	checkNetnsEnv()
	if filepath.Base(os.Args[0]) == IPAMType {
		ip := IPAMPlugin{p}
		skel.PluginMainFuncs(skel.CNIFuncs{Add: ip.Add, Del: ip.Del, Check: ip.Check, Status: ip.Status, GC: ip.GC},
			SupportedVersions, shim.About[shim.IPAMName])
		return
	}
	skel.PluginMainFuncs(skel.CNIFuncs{Add: p.Add, Del: p.Del, Check: p.Check, Status: p.Status, GC: p.GC},
		SupportedVersions, shim.About[""])
}
