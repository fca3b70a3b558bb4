// Command terrace-testbed builds and operates a multi-host Terrace fabric in network namespaces
// (package testbed): up, down, status, exec, pods, connectivity checks, faults and the demo.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/terracenet/terrace/testbed"
)

// usageError marks bad command lines (exit status 2, like invalid input).
type usageError struct{ error }

// exitError carries the exit status of a command run through exec.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRoot().ExecuteContext(ctx)
	stop()
	os.Exit(exitCode(err))
}

func exitCode(err error) int {
	var ee exitError
	var ue usageError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.code
	case errors.As(err, &ue), errors.Is(err, testbed.ErrInvalid):
		fmt.Fprintln(os.Stderr, "terrace-testbed:", err)
		return 2
	default:
		fmt.Fprintln(os.Stderr, "terrace-testbed:", err)
		return 1
	}
}

// env is what every subcommand shares: global flags and the logger.
type env struct {
	stateDir string
	prefix   string
	binDir   string
	logLevel string
	log      *slog.Logger
}

func (e *env) load() (*testbed.Testbed, error) {
	return testbed.Load(e.stateDir, e.log)
}

func newRoot() *cobra.Command {
	e := &env{}
	root := &cobra.Command{
		Use:           "terrace-testbed",
		Short:         "A multi-host Terrace fabric with a BIRD top-of-rack router, in network namespaces",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			var lvl slog.Level
			if err := lvl.UnmarshalText([]byte(e.logLevel)); err != nil {
				return usageError{fmt.Errorf("parse --log-level: %w", err)}
			}
			e.log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
			if e.binDir == "" {
				e.binDir = defaultBinDir()
			}
			return nil
		},
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	pf := root.PersistentFlags()
	pf.StringVar(&e.stateDir, "state-dir", envOr("TERRACE_TESTBED_STATE_DIR", testbed.DefaultStateDir), "directory of the testbed's state, configs, sockets and logs")
	pf.StringVar(&e.prefix, "prefix", testbed.DefaultPrefix, "prefix of every namespace the testbed creates")
	pf.StringVar(&e.binDir, "bin-dir", os.Getenv("TERRACE_TESTBED_BIN_DIR"), "directory holding terrace-node, terracectl, terrace-cni (default: this binary's directory)")
	pf.StringVar(&e.logLevel, "log-level", "info", "debug, info, warn or error")
	_ = pf.MarkHidden("prefix")
	root.AddCommand(newUpCmd(e), newDownCmd(e), newStatusCmd(e), newExecCmd(e), newPodCmd(e),
		newCheckCmd(e), newListenCmd(), newDemoCmd(e), newInjectCmd(e))
	root.AddCommand(newFaultCmds(e)...)
	usageExits(root)
	return root
}

// usageExits makes every command-line mistake exit 2: argument-count errors (cobra's are plain
// errors, exit 1), and a missing or unknown subcommand of a command that only groups others
// (cobra prints the help and exits 0 there, which a script takes for success).
func usageExits(c *cobra.Command) {
	if c.HasSubCommands() && c.Run == nil && c.RunE == nil {
		c.Args = cobra.ArbitraryArgs
		c.RunE = func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usageError{fmt.Errorf("unknown command %q for %q (see --help)", args[0], cmd.CommandPath())}
			}
			_ = cmd.Help()
			return usageError{fmt.Errorf("%s: give a command", cmd.CommandPath())}
		}
	} else if c.Args != nil {
		check := c.Args
		c.Args = func(cmd *cobra.Command, args []string) error {
			if err := check(cmd, args); err != nil {
				var ue usageError
				if errors.As(err, &ue) {
					return err
				}
				return usageError{err}
			}
			return nil
		}
	}
	for _, sub := range c.Commands() {
		usageExits(sub)
	}
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// defaultBinDir is where this binary lives: `make build` puts all four binaries in bin/ together.
func defaultBinDir() string {
	exe, err := os.Executable()
	if err != nil {
		return "bin"
	}
	if r, err := filepath.EvalSymlinks(exe); err == nil {
		exe = r
	}
	return filepath.Dir(exe)
}

// runForwarding runs a prepared command like runExit, passing the signals named on to it while
// it runs (so a SIGTERM to us stops it instead of leaving it behind).
func runForwarding(cmd *exec.Cmd, sigs ...os.Signal) error {
	ch := make(chan os.Signal, 4)
	signal.Notify(ch, sigs...)
	defer signal.Stop(ch)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("run %s: %w", cmd.Args[0], err)
	}
	done := make(chan struct{})
	go func() {
		for {
			select {
			case sig := <-ch:
				_ = cmd.Process.Signal(sig) // gone already: Wait reports how it ended
			case <-done:
				return
			}
		}
	}()
	err := cmd.Wait()
	close(done)
	return exitStatus(cmd, err)
}

// runExit runs a prepared command and turns its exit status into ours.
func runExit(cmd *exec.Cmd) error {
	return exitStatus(cmd, cmd.Run())
}

func exitStatus(cmd *exec.Cmd, err error) error {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return exitError{code: 128 + int(ws.Signal())} // as a shell reports it
		}
		return exitError{code: ee.ExitCode()}
	}
	if err != nil {
		return fmt.Errorf("run %s: %w", cmd.Args[0], err)
	}
	return nil
}
