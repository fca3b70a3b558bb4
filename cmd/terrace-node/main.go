// Command terrace-node is Terrace's host daemon: `run` registers the node, serves its local API and
// runs felix and the BGP agent; `etcd` runs the embedded single-member etcd.
// It owns the command line and configuration precedence of the daemon; the daemon's logic lives
// in package node and package embedded, and this command must never hold any of it.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/terracenet/terrace/cmd/internal/cliconf"
)

const binaryName = "terrace-node"

type usageError struct{ err error }

func (u usageError) Error() string { return u.err.Error() }
func (u usageError) Unwrap() error { return u.err }

func main() {
	os.Exit(execute(os.Args[1:], os.Stdout, os.Stderr))
}

func execute(args []string, out, errOut io.Writer) int {
	root := &cobra.Command{
		Use:           binaryName,
		Short:         "Terrace's host daemon",
		SilenceErrors: true,
		SilenceUsage:  true,
		// A RunE, so that cobra hands a mistyped command here instead of printing the help
		// and exiting 0, which a unit file or script would take for success.
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usageError{fmt.Errorf("unknown command %q (commands: run, etcd, version; see --help)", args[0])}
			}
			_ = cmd.Help()
			return usageError{errors.New("no command given")}
		},
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(newRunCmd(errOut), newEtcdCmd(errOut), &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  noArgs,
		Run:   func(*cobra.Command, []string) { fmt.Fprintf(out, "terrace-node %s\n", cliconf.VersionString()) },
	})
	root.SetArgs(args)
	root.SetOut(out)
	root.SetErr(errOut)
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	go func() {
		// After the first signal starts the orderly stop, the default handling comes back, so
		// a second SIGTERM or Ctrl-C ends a stop that takes too long (a 60 s drain).
		<-ctx.Done()
		cancel()
	}()
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	fmt.Fprintf(errOut, "terrace-node: error: %v\n", err)
	var ue usageError
	if errors.As(err, &ue) {
		return 2
	}
	return 1
}

// noArgs refuses positional arguments as bad usage (exit 2), as every other mistake on the
// command line is.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usageError{fmt.Errorf("%s takes no arguments, got %q", cmd.CommandPath(), args)}
	}
	return nil
}

// setup resolves configuration for a subcommand and opens its logger.
func setup(cmd *cobra.Command, configFile string, errOut io.Writer) (*cliconf.Config, *slog.Logger, func() error, error) {
	path, required := cliconf.DefaultFile(binaryName), false
	if configFile != "" {
		path, required = configFile, true
	}
	// One file for every subcommand: a key another one reads is not this one's typo.
	cfg, err := cliconf.LoadFile(cmd.Flags(), path, required, cliconf.WithKnownKeys(func(k string) bool {
		for _, c := range cmd.Root().Commands() {
			if c.Flags().Lookup(k) != nil {
				return true
			}
		}
		return cmd.Root().PersistentFlags().Lookup(k) != nil
	}))
	if err != nil {
		return nil, nil, nil, usageError{err}
	}
	log, closeLog, err := cliconf.NewLogger(cfg.String("log-level"), cfg.String("log-file"), errOut)
	if err != nil {
		return nil, nil, nil, usageError{err}
	}
	if cfg.File() != "" {
		log.Info("read config file", "path", cfg.File())
	}
	return cfg, log, closeLog, nil
}

func addCommonFlags(cmd *cobra.Command, configFile *string) {
	f := cmd.Flags()
	f.StringVar(configFile, "config", "", "config file (default "+cliconf.DefaultFile(binaryName)+" if present)")
	usage := "log level: debug, info, warn, error"
	if cmd.Name() == "run" {
		usage += " (unless given, FelixConfiguration and BGPConfiguration logSeverityScreen set felix's and bgp's)"
	}
	f.String("log-level", "info", usage)
	f.String("log-file", "", "log to this file instead of stderr")
}
