package cni

import "golang.org/x/sys/unix"

// statNetns identifies the namespace a path leads to: the nsfs device and inode, the same for a
// bind mount under /var/run/netns and for /proc/<pid>/ns/net of a process inside it.
func statNetns(path string) (dev, ino uint64, err error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, 0, err
	}
	return st.Dev, st.Ino, nil
}
