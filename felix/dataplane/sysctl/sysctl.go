// Package sysctl owns the per-interface kernel settings of host-side workload interfaces (proxy
// ARP/NDP, forwarding, route_localnet, no router advertisements, no DAD) and the host forwarding
// switches felix needs. It writes through /proc/sys of the calling thread's network namespace,
// writes only values that differ, and re-reads them at Resync. It must never change a setting of
// an interface it was not told about, and never anything outside net/.
package sysctl

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// FS reads and writes sysctl values by path relative to /proc/sys ("net/ipv4/conf/X/proxy_arp").
type FS interface {
	Read(path string) (string, error)
	Write(path, value string) error
}

// ProcFS is the real /proc/sys of the calling thread's network namespace.
type ProcFS struct {
	Root string // default /proc/sys
}

func (p ProcFS) full(path string) string {
	root := p.Root
	if root == "" {
		root = "/proc/sys"
	}
	return filepath.Join(root, path)
}

// Read implements FS.
func (p ProcFS) Read(path string) (string, error) {
	b, err := os.ReadFile(p.full(path))
	if err != nil {
		return "", fmt.Errorf("read sysctl %s: %w", path, err)
	}
	return strings.TrimSpace(string(b)), nil
}

// Write implements FS.
func (p ProcFS) Write(path, value string) error {
	f, err := os.OpenFile(p.full(path), os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return fmt.Errorf("write sysctl %s: %w", path, err)
	}
	_, werr := f.WriteString(value)
	if err := errors.Join(werr, f.Close()); err != nil {
		return fmt.Errorf("write sysctl %s: %w", path, err)
	}
	return nil
}

// Setting is one sysctl path (relative to /proc/sys) and its wanted value.
type Setting struct {
	Path  string
	Value string
}

// WorkloadSettings returns what a host-side workload interface needs for pure-L3 wiring: the host
// answers ARP/NDP for the pod's gateway at once, forwards, never autoconfigures from the pod, and
// drops IPv4 packets whose source is not routed to that interface (strict rp_filter), so a pod
// cannot send as another pod and pass others' policy for it.
func WorkloadSettings(ifname string, ipv4, ipv6 bool) []Setting {
	var s []Setting
	if ipv4 {
		s = append(s,
			Setting{"net/ipv4/conf/" + ifname + "/forwarding", "1"},
			Setting{"net/ipv4/conf/" + ifname + "/route_localnet", "1"},
			Setting{"net/ipv4/conf/" + ifname + "/proxy_arp", "1"},
			Setting{"net/ipv4/neigh/" + ifname + "/proxy_delay", "0"},
			Setting{"net/ipv4/conf/" + ifname + "/rp_filter", "1"},
		)
	}
	if ipv6 {
		s = append(s,
			Setting{"net/ipv6/conf/" + ifname + "/accept_ra", "0"},
			Setting{"net/ipv6/conf/" + ifname + "/accept_dad", "0"},
			Setting{"net/ipv6/conf/" + ifname + "/forwarding", "1"},
			Setting{"net/ipv6/conf/" + ifname + "/proxy_ndp", "1"},
			Setting{"net/ipv6/neigh/" + ifname + "/proxy_delay", "0"},
		)
	}
	return s
}

// HostSettings returns the host-wide switches routing workloads needs.
func HostSettings(ipv4, ipv6 bool) []Setting {
	var s []Setting
	if ipv4 {
		s = append(s, Setting{"net/ipv4/ip_forward", "1"})
	}
	if ipv6 {
		s = append(s, Setting{"net/ipv6/conf/all/forwarding", "1"})
	}
	return s
}

// ValidateInterfaceName rejects names that are not a single path element of an interface.
func ValidateInterfaceName(name string) error {
	if name == "" || len(name) > 15 || name == "." || name == ".." || strings.ContainsAny(name, "/ \t\n\x00") {
		return fmt.Errorf("validate interface name %q: not a kernel interface name", name)
	}
	return nil
}

type ifaceWant struct{ ipv4, ipv6 bool }

// Manager keeps the desired settings per interface plus host-wide ones. Not safe for concurrent use.
type Manager struct {
	fs  FS
	log *slog.Logger

	host    []Setting
	hostOK  bool
	desired map[string]ifaceWant
	done    map[string]bool // interfaces whose settings are known to be in place
	pending map[string]bool // interfaces that do not exist (yet)
}

// New returns a Manager writing through fs.
func New(fsys FS, log *slog.Logger) *Manager {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Manager{fs: fsys, log: log, desired: map[string]ifaceWant{}, done: map[string]bool{}, pending: map[string]bool{}}
}

// SetHost sets the host-wide settings (normally HostSettings(...)).
func (m *Manager) SetHost(s []Setting) {
	m.host = slices.Clone(s)
	m.hostOK = false
}

// SetInterface asks for the workload settings on ifname.
func (m *Manager) SetInterface(ifname string, ipv4, ipv6 bool) error {
	if err := ValidateInterfaceName(ifname); err != nil {
		return err
	}
	w := ifaceWant{ipv4, ipv6}
	if m.desired[ifname] != w {
		m.desired[ifname] = w
		delete(m.done, ifname)
	}
	return nil
}

// RemoveInterface forgets an interface; its settings die with it in the kernel.
func (m *Manager) RemoveInterface(ifname string) {
	delete(m.desired, ifname)
	delete(m.done, ifname)
	delete(m.pending, ifname)
}

// InterfaceChanged makes the next Apply re-check ifname, e.g. after it was re-created.
func (m *Manager) InterfaceChanged(ifname string) { delete(m.done, ifname) }

// Pending lists desired interfaces that do not exist yet; they are retried on every Apply.
func (m *Manager) Pending() []string { return slices.Sorted(maps.Keys(m.pending)) }

// Resync re-reads every desired setting and rewrites those that drifted.
func (m *Manager) Resync(ctx context.Context) error {
	clear(m.done)
	m.hostOK = false
	return m.Apply(ctx)
}

// Apply writes settings of interfaces not yet known to be configured. Failures are independent:
// the error joins them and the interfaces are retried next time.
func (m *Manager) Apply(ctx context.Context) error {
	var errs []error
	if !m.hostOK {
		if err := m.applySettings(m.host); err != nil {
			errs = append(errs, err)
		} else {
			m.hostOK = true
		}
	}
	for _, name := range slices.Sorted(maps.Keys(m.desired)) {
		if m.done[name] {
			continue
		}
		if err := ctx.Err(); err != nil {
			errs = append(errs, err)
			break
		}
		w := m.desired[name]
		err := m.applySettings(WorkloadSettings(name, w.ipv4, w.ipv6))
		switch {
		case errors.Is(err, fs.ErrNotExist):
			m.pending[name] = true
		case err != nil:
			errs = append(errs, fmt.Errorf("configure interface %s: %w", name, err))
		default:
			delete(m.pending, name)
			m.done[name] = true
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("apply sysctls: %w", err)
	}
	return nil
}

func (m *Manager) applySettings(ss []Setting) error {
	for _, s := range ss {
		cur, err := m.fs.Read(s.Path)
		if err != nil {
			return err
		}
		if cur == s.Value {
			continue
		}
		if err := m.fs.Write(s.Path, s.Value); err != nil {
			return err
		}
		m.log.Debug("sysctl written", "path", s.Path, "from", cur, "to", s.Value)
	}
	return nil
}
