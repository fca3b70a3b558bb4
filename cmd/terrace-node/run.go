package main

import (
	"errors"
	"io"
	"net/http"
	"time"

	"github.com/spf13/cobra"

	"github.com/terracenet/terrace/cmd/internal/cliconf"
	"github.com/terracenet/terrace/cni"
	"github.com/terracenet/terrace/node"
)

func newRunCmd(errOut io.Writer) *cobra.Command {
	var configFile string
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Register this node and serve its local API until SIGTERM",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, log, closeLog, err := setup(cmd, configFile, errOut)
			if err != nil {
				return err
			}
			defer closeLog()
			etcd, err := cfg.Etcd()
			if err != nil {
				return usageError{err}
			}
			nc := node.Config{
				NodeName:   cfg.String("node-name"),
				IPv4:       cfg.String("ip"),
				IPv6:       cfg.String("ip6"),
				IPv4Method: cfg.String("ip-autodetection-method"),
				IPv6Method: cfg.String("ip6-autodetection-method"),
				ASNumber:   cfg.String("as-number"),
				Etcd:       etcd,
				Socket:     cfg.String("node-socket"),
				StateDir:   cfg.String("state-dir"),
				RunDir:     cfg.String("run-dir"),
				Version:    cliconf.VersionString(),
				// The CNI plugin hands ADD, DEL and CHECK to this warm process (cni/agentrun.go).
				CNI: func(name string, ds http.Handler) node.CommandRunner {
					return (&cni.CommandServer{Node: name, Dataplane: cni.NewLinuxDataplane(), Datastore: ds}).Run
				},
			}
			if err := nc.Check(); err != nil {
				return usageError{err}
			}
			for _, k := range []string{"node-name", "ip", "ip6", "ip-autodetection-method", "ip6-autodetection-method", cliconf.FlagEtcdEndpoints, "node-socket"} {
				log.Debug("setting", "name", k, "value", cfg.String(k), "source", cfg.Source(k))
			}
			runFelix, ferr := cfg.Bool("felix")
			runBGP, berr := cfg.Bool("bgp")
			if err := errors.Join(ferr, berr); err != nil {
				return usageError{err}
			}
			// Each part's flags are checked even when the part is off: a mistake is refused
			// now, not on the day the part is switched on.
			felixComp, err := felixComponent(cfg)
			if err != nil {
				return usageError{err}
			}
			bgpComp, err := bgpComponent(cfg)
			if err != nil {
				return usageError{err}
			}
			if runFelix {
				nc.Components = append(nc.Components, felixComp)
			} else {
				log.Info("felix disabled by configuration: no policy, routes or interface settings are programmed")
			}
			if runBGP {
				nc.Components = append(nc.Components, bgpComp)
				if dbg := cfg.String("bgp-debug-listen"); dbg != "" {
					log.Warn("GoBGP gRPC API enabled for debugging", "listen", dbg)
				}
			} else {
				log.Info("bgp disabled by configuration: nothing is advertised and no routes are learned")
			}
			if err := applyMemoryLimit(cfg, log); err != nil {
				return usageError{err}
			}
			if dbg := cfg.String("debug-pprof-listen"); dbg != "" {
				if err := parseDebugListen(dbg); err != nil {
					return usageError{err}
				}
				nc.Components = append(nc.Components, debugComponent{listen: dbg, log: log})
			}
			// Only now that every flag was accepted: a refused invocation writes nothing.
			if path := cfg.String("rt-protos-file"); path != "" && (runFelix || runBGP) {
				// Names for "ip route" output of either part's routes (80: felix, 81: bgp); never
				// worth failing the daemon over.
				if err := writeProtocolNames(path); err != nil {
					log.Warn("could not write route protocol names", "path", path, "err", err)
				}
			}
			log.Info("terrace-node starting", "version", nc.Version)
			return node.Run(cmd.Context(), nc, log)
		},
	}
	f := cmd.Flags()
	f.String("node-name", "", "this node's name (default: the name recorded in <state-dir>/nodename at the last start, else the host name)")
	f.String("ip", "", "IPv4 address (optionally CIDR) of this node; empty or 'autodetect': detect it; 'none': no IPv4")
	f.String("ip6", "", "IPv6 address of this node; 'autodetect' to detect it; empty: none unless --ip6-autodetection-method is set")
	f.String("ip-autodetection-method", "first-found", "first-found, interface=REGEX or can-reach=ADDR")
	f.String("ip6-autodetection-method", "", "as --ip-autodetection-method, for IPv6")
	f.String("as-number", "", "this node's AS number (plain or dotted); default: the cluster's")
	f.String("node-socket", node.DefaultSocket, "local API socket")
	f.String("state-dir", node.DefaultStateDir, "persistent state directory")
	f.String("run-dir", node.DefaultRunDir, "runtime state directory")
	f.String("go-memory-limit", defaultMemoryLimit, "soft limit on the Go heap (GOMEMLIMIT notation, e.g. 512MiB; 'off': none): the collector works harder near it instead of letting the heap double")
	f.String("debug-pprof-listen", "", "loopback address (e.g. 127.0.0.1:6060) serving Go's profiler at /debug/pprof/; empty: none")
	addFelixFlags(f)
	addBGPFlags(f)
	cliconf.AddEtcdFlags(f, 5*time.Second)
	addCommonFlags(cmd, &configFile)
	return cmd
}
