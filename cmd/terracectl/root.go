package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/terracenet/terrace/cmd/internal/cliconf"
	"github.com/terracenet/terrace/datastore"
	"github.com/terracenet/terrace/datastore/api"
	"github.com/terracenet/terrace/datastore/kv"
	"github.com/terracenet/terrace/node"
)

const binaryName = "terracectl"

// Exit statuses (CONVENTIONS.md).
const (
	exitOK      = 0
	exitRuntime = 1
	exitInput   = 2
)

// exitError carries the exit status an error must produce.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func usageErrorf(format string, args ...any) error {
	return &exitError{code: exitInput, err: fmt.Errorf(format, args...)}
}

// reported is returned when a command has already printed its own per-item errors; only the exit
// status remains to be given.
type reported struct{ code int }

func (r reported) Error() string { return fmt.Sprintf("exit status %d", r.code) }

// exitCode maps an error to the exit status: bad usage and invalid resources are the user's input
// (2), everything else is a runtime failure (1).
func exitCode(err error) int {
	var ee *exitError
	var rep reported
	var ve *api.ValidationError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &rep):
		return rep.code
	case errors.As(err, &ee):
		return ee.code
	case errors.As(err, &ve):
		return exitInput
	}
	return exitRuntime
}

// oneLine keeps an error to one line: etcd's gRPC errors can carry newlines.
func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", " ")), " ")
}

// env is what every subcommand shares: I/O, resolved configuration and the datastore connection.
type env struct {
	in     io.Reader
	out    io.Writer
	errOut io.Writer
	log    *slog.Logger
	cfg    *cliconf.Config

	store  *kv.Store
	client *datastore.Client
}

// connect opens the datastore once per invocation. An unreachable etcd fails within the dial
// timeout with one line naming the endpoints.
func (e *env) connect(ctx context.Context) (*datastore.Client, error) {
	if e.client != nil {
		return e.client, nil
	}
	kc, err := e.cfg.Etcd()
	if err != nil {
		return nil, &exitError{code: exitInput, err: err}
	}
	if kc.DialTimeout <= 0 {
		kc.DialTimeout = 3 * time.Second
	}
	cctx, cancel := context.WithTimeout(ctx, kc.DialTimeout+2*time.Second)
	defer cancel()
	s, err := kv.Open(cctx, kc, e.log)
	if err != nil {
		eps := strings.Join(kc.Endpoints, ",")
		if errors.Is(err, context.DeadlineExceeded) {
			return nil, fmt.Errorf("connect to etcd at %s: no answer within %s (the endpoints are from %s; check --%s, %s or the config file)",
				eps, kc.DialTimeout, e.cfg.Where(cliconf.FlagEtcdEndpoints), cliconf.FlagEtcdEndpoints, cliconf.EnvName(cliconf.FlagEtcdEndpoints))
		}
		return nil, fmt.Errorf("connect to etcd at %s: %s", eps, oneLine(err.Error()))
	}
	e.store, e.client = s, datastore.New(s, e.log)
	return e.client, nil
}

func (e *env) close() {
	if e.store != nil {
		e.store.Close()
	}
}

// printf writes to the command's output; a failed write to stdout cannot be reported anywhere
// useful, so it is ignored.
func (e *env) printf(format string, args ...any) { fmt.Fprintf(e.out, format, args...) }

// errorf reports one problem on stderr in the house format.
func (e *env) errorf(format string, args ...any) {
	fmt.Fprintf(e.errOut, "error: "+format+"\n", args...)
}

func newRootCmd(e *env) *cobra.Command {
	var configFile, logLevel string
	root := &cobra.Command{
		Use:           binaryName,
		Short:         "Manage Terrace resources and inspect the local node",
		SilenceErrors: true,
		SilenceUsage:  true,
		Args:          noArgs,
		RunE:          func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			path, required := cliconf.DefaultFile(binaryName), false
			if configFile != "" {
				path, required = configFile, true
			}
			// Only the global flags are read through the configuration; a subcommand's own
			// (-o, -n, ...) come from its command line alone.
			cfg, err := cliconf.LoadFile(cmd.Flags(), path, required, cliconf.WithKnownKeys(func(k string) bool {
				return cmd.Root().PersistentFlags().Lookup(k) != nil
			}))
			if err != nil {
				return &exitError{code: exitInput, err: err}
			}
			e.cfg = cfg
			lvl, err := cliconf.ParseLevel(cfg.String("log-level"))
			if err != nil {
				return &exitError{code: exitInput, err: err}
			}
			e.log = slog.New(slog.NewTextHandler(e.errOut, &slog.HandlerOptions{Level: lvl}))
			return nil
		},
	}
	pf := root.PersistentFlags()
	pf.StringVar(&configFile, "config", "", "config file (default "+cliconf.DefaultFile(binaryName)+" if present)")
	pf.StringVar(&logLevel, "log-level", "error", "log level: debug, info, warn, error")
	pf.String("node-socket", node.DefaultSocket, "the local terrace-node's API socket (env "+cliconf.EnvName("node-socket")+")")
	cliconf.AddEtcdFlags(pf, 3*time.Second)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error {
		return &exitError{code: exitInput, err: err}
	})
	root.AddCommand(
		newGetCmd(e), newCreateCmd(e), newApplyCmd(e), newReplaceCmd(e), newDeleteCmd(e),
		newLabelCmd(e), newVersionCmd(e), newNodeCmd(e), newIPAMCmd(e),
	)
	return root
}

// noArgs, and the other validators, make argument mistakes exit 2 rather than cobra's generic error.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usageErrorf("unknown command %q for %q (see --help)", args[0], cmd.CommandPath())
	}
	return nil
}

func rangeArgs(lo, hi int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < lo || (hi >= 0 && len(args) > hi) {
			return usageErrorf("%s: usage: %s", cmd.CommandPath(), what)
		}
		return nil
	}
}

// execute runs the CLI and returns the exit status.
func execute(args []string, in io.Reader, out, errOut io.Writer) int {
	e := &env{in: in, out: out, errOut: errOut, log: slog.New(slog.DiscardHandler)}
	defer e.close()
	root := newRootCmd(e)
	root.SetArgs(args)
	root.SetIn(in)
	root.SetOut(out)
	root.SetErr(errOut)
	ctx, cancel := signalContext()
	defer cancel()
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	var rep reported
	if errors.As(err, &rep) {
		return rep.code
	}
	msg := oneLine(err.Error())
	fmt.Fprintln(errOut, "error: "+msg)
	// Errors cobra raises itself before our validators run (e.g. a misspelt subcommand of a
	// command group) are usage errors too.
	if strings.HasPrefix(msg, "unknown command") || strings.HasPrefix(msg, "unknown flag") {
		return exitInput
	}
	return exitCode(err)
}
