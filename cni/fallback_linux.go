package cni

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"
)

// The default terrace-cni links no etcd client: every ADD, DEL and CHECK goes through the node
// agent, and a process that starts without gRPC and protobuf costs a third less CPU, which is most
// of a pod's network setup when many start at once. When the agent does not answer, or a command
// needs etcd itself (GC, STATUS), the plugin replaces itself with terrace-cni-etcd from its own
// directory: the same command line, environment and standard input, so the runtime sees one
// plugin call either way.

// FallbackBinary is the etcd-linked plugin a thin terrace-cni hands commands to.
const FallbackBinary = "terrace-cni-etcd"

// FallbackEnv is set in the environment of a plugin started in place of a thin one: it goes to
// etcd directly (the agent was just found wanting) and never execs again.
const FallbackEnv = "TERRACE_CNI_FALLBACK"

// Fallback is how a thin plugin process gives its command to the fallback binary.
type Fallback struct {
	stdin *os.File // a memory file holding the standard input the runtime gave
	path  string   // the fallback binary; empty when it could not be determined
	err   error    // why there is no fallback
}

// PrepareFallback keeps the plugin's standard input in a memory file (the fallback must read
// it again after skel has) and makes it os.Stdin; it finds the fallback binary beside the
// running one. A failure only means no fallback: the plugin still works through the agent.
func PrepareFallback() *Fallback {
	f := &Fallback{}
	if os.Getenv(FallbackEnv) != "" {
		f.err = fmt.Errorf("this terrace-cni was itself started as %s, which must link the etcd client", FallbackBinary)
		return f
	}
	exe, err := os.Executable() // the real file, also when called through a terrace-ipam link
	if err != nil {
		f.err = fmt.Errorf("find %s: %w", FallbackBinary, err)
		return f
	}
	f.path = filepath.Join(filepath.Dir(exe), FallbackBinary)
	switch os.Getenv("CNI_COMMAND") {
	case "", "VERSION":
		// Never handed over; and without a command (someone looking at the binary in a
		// terminal) skel prints what the plugin is without reading standard input.
		f.err = fmt.Errorf("%s needs no fallback", cmp.Or(os.Getenv("CNI_COMMAND"), "no command"))
		return f
	}
	data, err := io.ReadAll(os.Stdin)
	if err != nil {
		f.err = fmt.Errorf("read standard input: %w", err)
		return f
	}
	f.stdin, err = memoryFile(data)
	if err != nil {
		// Standard input is consumed: skel must still see it, even though the fallback cannot.
		f.err = fmt.Errorf("keep standard input for %s: %w", FallbackBinary, err)
		if r, w, perr := os.Pipe(); perr == nil {
			go func() { _, _ = w.Write(data); w.Close() }()
			os.Stdin = r
		}
		return f
	}
	os.Stdin = f.stdin
	return f
}

// memoryFile returns a memfd holding data, positioned at its start.
func memoryFile(data []byte) (*os.File, error) {
	fd, err := unix.MemfdCreate("terrace-cni-stdin", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("create memfd: %w", err)
	}
	f := os.NewFile(uintptr(fd), "stdin")
	if _, err := f.Write(data); err != nil {
		f.Close()
		return nil, fmt.Errorf("write memfd: %w", err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		f.Close()
		return nil, fmt.Errorf("rewind memfd: %w", err)
	}
	return f, nil
}

// Connector returns the thin plugin's Connector: it never returns a Backend, it execs the
// fallback binary, which runs the whole command again against etcd. Every command connects
// before it changes anything in the datastore, and what one may do before (DEL removes the
// host-side interface) is idempotent, so running the command again from the start is safe. If
// the exec fails, the command fails with ErrUnavailable (CNI "try again later").
func (f *Fallback) Connector() Connector {
	return func(ctx context.Context, cfg EtcdConfig, log *slog.Logger) (Backend, error) {
		err := f.exec(log)
		return nil, fmt.Errorf("%w: the node agent did not answer and the etcd fallback could not run: %w", ErrUnavailable, err)
	}
}

// Later returns the thin plugin's Plugin.ConnectLater: a datastore call the agent does not serve,
// made once a command has started, fails with ErrUnavailable; replacing the process then would
// drop the undo of what the command has done.
func (f *Fallback) Later() Connector {
	return func(context.Context, EtcdConfig, *slog.Logger) (Backend, error) {
		return nil, fmt.Errorf("%w: this terrace-cni links no etcd client and the node agent does not serve this call", ErrUnavailable)
	}
}

func (f *Fallback) exec(log *slog.Logger) error {
	if f.err != nil {
		return f.err
	}
	if err := unix.Access(f.path, unix.X_OK); err != nil {
		return fmt.Errorf("%s is not installed beside terrace-cni: %w", f.path, err)
	}
	if _, err := f.stdin.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("rewind standard input: %w", err)
	}
	log.Info("handing the command to the etcd-linked plugin", "path", f.path)
	// dup3 without O_CLOEXEC: the memory file becomes the new program's standard input.
	if err := unix.Dup3(int(f.stdin.Fd()), 0, 0); err != nil {
		return fmt.Errorf("pass standard input: %w", err)
	}
	err := syscall.Exec(f.path, os.Args, append(os.Environ(), FallbackEnv+"=1"))
	return fmt.Errorf("exec %s: %w", f.path, err)
}
