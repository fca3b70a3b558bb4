package testbed

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// ErrNotUp is returned when there is no testbed state to act on.
var ErrNotUp = errors.New("no testbed is up")

// State is everything a later invocation needs to find and operate the testbed; it is stored as
// JSON in <StateDir>/state.json.
type State struct {
	Options    Options     `json:"options"`
	Created    time.Time   `json:"created"`
	Namespaces []string    `json:"namespaces"`
	Ctl        CtlState    `json:"ctl"`
	Tors       []TorState  `json:"tors"`
	Hosts      []HostState `json:"hosts"`
	Pods       []PodState  `json:"pods"`
	// Ready is set once up has finished; a state without it is what a crashed up left behind.
	Ready bool `json:"ready"`
	// Warnings records what could not be set up because a part of Terrace is not built yet.
	Warnings []string `json:"warnings,omitempty"`
}

// CtlState describes the control namespace and its etcd.
type CtlState struct {
	NS       string `json:"netns"`
	Dir      string `json:"dir"`
	Endpoint string `json:"endpoint"`
	Etcd     *Proc  `json:"etcd,omitempty"`
}

// TorState describes one BIRD top-of-rack router.
type TorState struct {
	Name     string `json:"name"`
	NS       string `json:"netns"`
	Dir      string `json:"dir"`
	RouterID string `json:"routerID"`
	AS       uint32 `json:"as"`
	Config   string `json:"config"`
	Inject   string `json:"injectConfig"`
	Socket   string `json:"socket"`
	Bird     *Proc  `json:"bird,omitempty"`
}

// Uplink is one host↔ToR point-to-point link.
type Uplink struct {
	Tor       string `json:"tor"`
	HostIf    string `json:"hostIf"`
	TorIf     string `json:"torIf"`
	HostAddr  string `json:"hostAddr"`
	TorAddr   string `json:"torAddr"`
	HostAddr6 string `json:"hostAddr6,omitempty"`
	TorAddr6  string `json:"torAddr6,omitempty"`
}

// HostState describes one host namespace and its terrace-node.
type HostState struct {
	Name      string   `json:"name"`
	Index     int      `json:"index"`
	NS        string   `json:"netns"`
	Dir       string   `json:"dir"`
	ConfigDir string   `json:"configDir"`
	StateDir  string   `json:"stateDir"`
	RunDir    string   `json:"runDir"`
	Socket    string   `json:"socket"`
	LogFile   string   `json:"logFile"`
	IPv4      string   `json:"ipv4"`
	IPv6      string   `json:"ipv6,omitempty"`
	CtlAddr   string   `json:"ctlAddr"`
	Uplinks   []Uplink `json:"uplinks"`
	Node      *Proc    `json:"node,omitempty"`
	Bird      *Proc    `json:"bird,omitempty"` // BIRD alone on the host (benchmark anchor), see StartHostBird
	NodeArgv  []string `json:"nodeArgv,omitempty"`
}

// PodState describes one pod.
type PodState struct {
	Host        string            `json:"host"`
	Name        string            `json:"name"`
	Namespace   string            `json:"namespace"`
	NS          string            `json:"netns"`
	ContainerID string            `json:"containerID"`
	HostIf      string            `json:"hostIf,omitempty"`
	IPv4        string            `json:"ipv4,omitempty"`
	IPv6        string            `json:"ipv6,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Mode        CNIMode           `json:"mode"`
	// Requested are the addresses the pod asked for (PodSpec.IPs).
	Requested []netip.Addr `json:"requested,omitempty"`
}

func statePath(dir string) string { return filepath.Join(dir, "state.json") }

func loadState(dir string) (*State, error) {
	b, err := os.ReadFile(statePath(dir))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("load state from %s: %w", dir, ErrNotUp)
	}
	if err != nil {
		return nil, fmt.Errorf("load state: %w", err)
	}
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("parse state %s: %w", statePath(dir), err)
	}
	return &s, nil
}

// save writes atomically so a crash mid-write never leaves a state file down cannot read.
func (s *State) save() error {
	dir := s.Options.StateDir
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create state dir: %w", err)
	}
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("encode state: %w", err)
	}
	tmp := statePath(dir) + ".tmp"
	// 0600: the options may hold the fabric's BGP password.
	if err := writePrivate(tmp, b); err != nil {
		return fmt.Errorf("write state: %w", err)
	}
	if err := os.Rename(tmp, statePath(dir)); err != nil {
		return fmt.Errorf("write state: %w", err)
	}
	return nil
}

// lockDir takes an exclusive lock on the state directory so concurrent invocations (two `pod add`s
// from a script) do not overwrite each other's state.
func lockDir(dir string) (func(), error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create state dir: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock state dir: %w", err)
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}

func (s *State) host(name string) (*HostState, error) {
	for i := range s.Hosts {
		if s.Hosts[i].Name == name {
			return &s.Hosts[i], nil
		}
	}
	return nil, fmt.Errorf("find host %q: %w: the testbed has %d hosts", name, ErrInvalid, len(s.Hosts))
}

func (s *State) tor(name string) (*TorState, error) {
	for i := range s.Tors {
		if s.Tors[i].Name == name {
			return &s.Tors[i], nil
		}
	}
	return nil, fmt.Errorf("find tor %q: %w: the testbed has %d tors", name, ErrInvalid, len(s.Tors))
}

func (s *State) pod(host, name string) (int, bool) {
	for i, p := range s.Pods {
		if p.Host == host && p.Name == name {
			return i, true
		}
	}
	return -1, false
}

// procs lists every daemon the state records, in the order they should be stopped.
func (s *State) procs() []*Proc {
	var out []*Proc
	for _, h := range s.Hosts {
		if h.Node != nil {
			out = append(out, h.Node)
		}
		if h.Bird != nil {
			out = append(out, h.Bird)
		}
	}
	for _, t := range s.Tors {
		if t.Bird != nil {
			out = append(out, t.Bird)
		}
	}
	if s.Ctl.Etcd != nil {
		out = append(out, s.Ctl.Etcd)
	}
	return out
}
