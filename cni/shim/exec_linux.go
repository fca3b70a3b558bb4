package shim

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"
)

// execFallback replaces the process with terrace-cni-etcd from the shim's own directory: the same
// argv (so terrace-ipam stays terrace-ipam), the environment plus FallbackEnv=mode, and the runtime's
// standard input, which the shim has consumed, given again from a memory file. It returns only on
// failure.
func execFallback(stdin []byte, mode string) error {
	if os.Getenv(FallbackEnv) != "" {
		return errors.New("this terrace-cni was itself started as " + FallbackBinary + ", which must be the etcd-linked plugin")
	}
	exe, err := os.Executable() // the real file, also when called through a terrace-ipam link
	if err != nil {
		return errors.New("find " + FallbackBinary + ": " + err.Error())
	}
	path := filepath.Join(filepath.Dir(exe), FallbackBinary)
	if err := unix.Access(path, unix.X_OK); err != nil {
		return errors.New(path + " is not installed beside terrace-cni: " + err.Error())
	}
	fd, err := unix.MemfdCreate("terrace-cni-stdin", unix.MFD_CLOEXEC)
	if err != nil {
		return errors.New("keep standard input: create memfd: " + err.Error())
	}
	f := os.NewFile(uintptr(fd), "stdin")
	defer f.Close()
	if _, err := f.Write(stdin); err != nil {
		return errors.New("keep standard input: " + err.Error())
	}
	if _, err := f.Seek(0, 0); err != nil {
		return errors.New("keep standard input: rewind: " + err.Error())
	}
	// dup3 without O_CLOEXEC: the memory file becomes the new program's standard input.
	if err := unix.Dup3(fd, 0, 0); err != nil {
		return errors.New("pass standard input: " + err.Error())
	}
	err = syscall.Exec(path, os.Args, append(os.Environ(), FallbackEnv+"="+mode))
	return errors.New("exec " + path + ": " + err.Error())
}

// StatNetns identifies the namespace a path leads to (nsfs device and inode), so the agent can
// check that the path leads it to the same one.
func StatNetns(path string) (dev, ino uint64, err error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, 0, err
	}
	return st.Dev, st.Ino, nil
}
