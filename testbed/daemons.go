package testbed

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func (tb *Testbed) bin(name string) string { return filepath.Join(tb.st.Options.BinDir, name) }

func (tb *Testbed) etcdArgv() []string {
	c := tb.st.Ctl
	return []string{tb.bin("terrace-node"), "etcd", "--data-dir", filepath.Join(c.Dir, "etcd"),
		"--listen-client", c.Endpoint, "--listen-peer", "http://127.0.0.1:2380",
		"--config", filepath.Join(c.Dir, "terrace-node.yaml")}
}

func (tb *Testbed) startEtcd(ctx context.Context) error {
	c := &tb.st.Ctl
	// An empty config file of its own, as each node's (nodeArgv).
	if err := os.WriteFile(filepath.Join(c.Dir, "terrace-node.yaml"), nil, 0o644); err != nil {
		return fmt.Errorf("start etcd: %w", err)
	}
	p, err := startProc(c.NS, tb.etcdArgv(), filepath.Join(c.Dir, "etcd.log"), nil)
	if err != nil {
		return fmt.Errorf("start etcd: %w", err)
	}
	c.Etcd = p
	tb.log.Info("started etcd", "netns", c.NS, "pid", p.Pid, "endpoint", c.Endpoint)
	deadline := time.Now().Add(20 * time.Second)
	for {
		if tb.etcdHealthy(ctx) {
			return nil
		}
		if p.Exited() {
			return fmt.Errorf("start etcd: exited: %s", tailFile(p.Output, 3))
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("start etcd: no answer on %s after 20s: %s", c.Endpoint, tailFile(p.Output, 3))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// etcdHealthy asks etcd's /health from inside the ctl namespace (the root namespace cannot reach it).
func (tb *Testbed) etcdHealthy(ctx context.Context) bool {
	var ok bool
	_ = inNetNS(filepath.Join(netnsDir, tb.st.Ctl.NS), func() error {
		d := net.Dialer{Timeout: time.Second}
		conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort(EtcdAddr, strconv.Itoa(EtcdPort)))
		if err != nil {
			return err
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
		fmt.Fprintf(conn, "GET /health HTTP/1.0\r\nHost: %s\r\n\r\n", EtcdAddr)
		line, _ := bufio.NewReader(conn).ReadString('\n')
		ok = strings.Contains(line, " 200 ")
		return nil
	})
	return ok
}

// applyFabricConfig writes the resources the topology implies: the IP pools, the BGP configuration
// (mesh on/off, host AS) and one per-node BGPPeer per uplink. It goes through terracectl like a user
// would; while terracectl cannot do it yet the failure is recorded as a warning, not hidden.
func (tb *Testbed) applyFabricConfig(ctx context.Context) {
	o := tb.st.Options
	var b strings.Builder
	doc := func(s string, args ...any) { fmt.Fprintf(&b, "---\napiVersion: terrace.dev/v1\n"+s, args...) }
	doc("kind: IPPool\nmetadata: {name: default-ipv4-ippool}\nspec: {cidr: %s, blockSize: 26, ipipMode: Never, vxlanMode: Never, natOutgoing: false}\n", PoolV4)
	if o.IPv6 {
		doc("kind: IPPool\nmetadata: {name: default-ipv6-ippool}\nspec: {cidr: %q, blockSize: 122, ipipMode: Never, vxlanMode: Never, natOutgoing: false}\n", PoolV6)
	}
	doc("kind: BGPConfiguration\nmetadata: {name: default}\nspec: {nodeToNodeMeshEnabled: %t, asNumber: %d}\n", !o.NoMesh, o.HostAS)
	pw := ""
	if o.BGPPassword != "" {
		pw = ", password: {secretKeyRef: {name: bgp, key: tor}}"
	}
	for _, h := range tb.st.Hosts {
		for _, u := range h.Uplinks {
			t, _ := tb.st.tor(u.Tor)
			// sourceAddress None: the session leaves from the uplink's own address, the one the
			// ToR knows as neighbour (the default, the node IP, is the address on tor-1's link only).
			doc("kind: BGPPeer\nmetadata: {name: %s-%s}\nspec: {node: %s, peerIP: %q, asNumber: %d, sourceAddress: None%s}\n", h.Name, u.Tor, h.Name, u.TorAddr, t.AS, pw)
			if u.TorAddr6 != "" {
				doc("kind: BGPPeer\nmetadata: {name: %s-%s-v6}\nspec: {node: %s, peerIP: %q, asNumber: %d, sourceAddress: None%s}\n", h.Name, u.Tor, h.Name, u.TorAddr6, t.AS, pw)
			}
		}
	}
	if o.BGPPassword != "" {
		// The secret is node-local: written before the BGPPeers that name it exist.
		for _, h := range tb.st.Hosts {
			dir := filepath.Join(h.StateDir, "secrets", "bgp")
			if err := os.MkdirAll(dir, 0o700); err != nil {
				tb.warn("write bgp secret on %s: %v", h.Name, err)
				continue
			}
			if err := os.WriteFile(filepath.Join(dir, "tor"), []byte(o.BGPPassword+"\n"), 0o600); err != nil {
				tb.warn("write bgp secret on %s: %v", h.Name, err)
			}
		}
	}
	path := filepath.Join(tb.st.Ctl.Dir, "fabric.yaml")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		tb.warn("write fabric config: %v", err)
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	h := tb.st.Hosts[0]
	cmd := tb.command(ctx, h.NS, &h, []string{tb.bin("terracectl"), "apply", "-f", path})
	out, err := cmd.CombinedOutput()
	if err != nil {
		tb.warn("fabric config (IP pools, BGP configuration, BGP peers) not applied: terracectl apply -f %s: %v: %s",
			path, err, lastLine(string(out)))
		return
	}
	tb.log.Info("applied fabric config", "file", path)
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

func (tb *Testbed) warn(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	tb.log.Warn(msg)
	tb.st.Warnings = append(tb.st.Warnings, msg)
}

func (tb *Testbed) nodeArgv(h *HostState) []string {
	argv := []string{tb.bin("terrace-node"), "run", "--node-name", h.Name, "--ip", h.IPv4}
	if h.IPv6 != "" {
		argv = append(argv, "--ip6", h.IPv6)
	}
	argv = append(argv, "--as-number", strconv.FormatUint(uint64(tb.st.Options.HostAS), 10),
		"--etcd-endpoints", tb.st.Ctl.Endpoint, "--node-socket", h.Socket,
		"--state-dir", h.StateDir, "--run-dir", h.RunDir,
		"--log-level", tb.st.Options.LogLevel, "--log-file", h.LogFile,
		// Its own (empty) config file, so the machine's /etc/terrace/terrace-node.yaml does not
		// configure the fabric's nodes.
		"--config", nodeConfigFile(h))
	argv = append(argv, tb.st.Options.NodeArgs...)
	return argv
}

func nodeConfigFile(h *HostState) string { return filepath.Join(h.Dir, "terrace-node.yaml") }

func (tb *Testbed) startNode(h *HostState) error {
	if err := os.WriteFile(nodeConfigFile(h), nil, 0o644); err != nil {
		return fmt.Errorf("start terrace-node on %s: %w", h.Name, err)
	}
	h.NodeArgv = tb.nodeArgv(h)
	p, err := startProc(h.NS, h.NodeArgv, filepath.Join(h.Dir, "node.out"), nil)
	if err != nil {
		return fmt.Errorf("start terrace-node on %s: %w", h.Name, err)
	}
	h.Node = p
	tb.log.Info("started terrace-node", "host", h.Name, "pid", p.Pid)
	return nil
}

// waitNodes gives the daemons a moment to open their sockets. A daemon that exits or stays silent is
// recorded in Warnings rather than failing Up: the fabric stays for inspection, and the command
// exits non-zero over it.
func (tb *Testbed) waitNodes(ctx context.Context) {
	deadline := time.Now().Add(15 * time.Second)
	pending := map[string]bool{}
	for _, h := range tb.st.Hosts {
		pending[h.Name] = true
	}
	for len(pending) > 0 && time.Now().Before(deadline) && ctx.Err() == nil {
		for i := range tb.st.Hosts {
			h := &tb.st.Hosts[i]
			if !pending[h.Name] {
				continue
			}
			if _, err := os.Stat(h.Socket); err == nil {
				delete(pending, h.Name)
				continue
			}
			if h.Node.Exited() {
				delete(pending, h.Name)
				tb.warn("terrace-node on %s exited: %s", h.Name, tailFile(h.Node.Output, 2))
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	for name := range pending {
		tb.warn("terrace-node on %s has not opened its socket after 15s", name)
	}
}

// command builds a command run inside ns with bin/ on PATH and the host's etcd and socket set, which
// is what exec and the CNI calls use.
func (tb *Testbed) command(ctx context.Context, ns string, h *HostState, argv []string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns}, argv...)...)
	cmd.Env = append(os.Environ(), "PATH="+tb.st.Options.BinDir+":"+os.Getenv("PATH"),
		"TERRACE_ETCD_ENDPOINTS="+tb.st.Ctl.Endpoint)
	if h != nil {
		cmd.Env = append(cmd.Env, "TERRACE_NODE_SOCKET="+h.Socket, "TERRACE_NODE_NAME="+h.Name)
	}
	return cmd
}

// StopNode stops a host's terrace-node with SIGTERM (SIGKILL after 10s).
func (tb *Testbed) StopNode(ctx context.Context, host string) error {
	return tb.stopNode(host, syscall.SIGTERM)
}

// KillNode kills a host's terrace-node with SIGKILL, as a crash would.
func (tb *Testbed) KillNode(ctx context.Context, host string) error {
	return tb.stopNode(host, syscall.SIGKILL)
}

func (tb *Testbed) stopNode(host string, sig syscall.Signal) error {
	return tb.update(func() error {
		h, err := tb.st.host(host)
		if err != nil {
			return err
		}
		if err := h.Node.Stop(sig, 10*time.Second); err != nil {
			return fmt.Errorf("stop terrace-node on %s: %w", host, err)
		}
		return nil
	})
}

// StartNode starts a host's terrace-node again (a no-op when it runs).
func (tb *Testbed) StartNode(ctx context.Context, host string) error {
	return tb.update(func() error {
		h, err := tb.st.host(host)
		if err != nil {
			return err
		}
		if h.Node.Alive() {
			return nil
		}
		return tb.startNode(h)
	})
}

// NodeRunning reports whether a host's terrace-node runs.
func (tb *Testbed) NodeRunning(host string) bool {
	h, err := tb.st.host(host)
	return err == nil && h.Node.Alive()
}

// StopEtcd stops the embedded etcd.
func (tb *Testbed) StopEtcd(ctx context.Context) error {
	return tb.update(func() error {
		if err := tb.st.Ctl.Etcd.Stop(syscall.SIGTERM, 10*time.Second); err != nil {
			return fmt.Errorf("stop etcd: %w", err)
		}
		return nil
	})
}

// StartEtcd starts the embedded etcd again on the same data and waits until it is healthy.
func (tb *Testbed) StartEtcd(ctx context.Context) error {
	return tb.update(func() error {
		if tb.st.Options.NoEtcd {
			return fmt.Errorf("start etcd: %w: the testbed was built without etcd", ErrInvalid)
		}
		if tb.st.Ctl.Etcd.Alive() {
			return nil
		}
		return tb.startEtcd(ctx)
	})
}

// EtcdHealthy reports whether etcd answers its health check.
func (tb *Testbed) EtcdHealthy(ctx context.Context) bool { return tb.etcdHealthy(ctx) }

// StopTor stops a ToR's BIRD (its sessions drop, its routes leave its kernel).
func (tb *Testbed) StopTor(ctx context.Context, tor string) error {
	return tb.update(func() error {
		t, err := tb.st.tor(tor)
		if err != nil {
			return err
		}
		if err := t.Bird.Stop(syscall.SIGTERM, 10*time.Second); err != nil {
			return fmt.Errorf("stop bird on %s: %w", tor, err)
		}
		return nil
	})
}

// StartTor starts a ToR's BIRD again and waits for its control socket.
func (tb *Testbed) StartTor(ctx context.Context, tor string) error {
	return tb.update(func() error {
		t, err := tb.st.tor(tor)
		if err != nil {
			return err
		}
		if t.Bird.Alive() {
			return nil
		}
		return tb.startBird(ctx, t)
	})
}

// LinkDown takes a host's uplink to one ToR (or to every ToR when tor is "") down on both ends.
func (tb *Testbed) LinkDown(ctx context.Context, host, tor string) error {
	return tb.setLinks(ctx, host, tor, "down")
}

// LinkUp brings uplinks back up; the addresses stay, so routes return with the carrier.
func (tb *Testbed) LinkUp(ctx context.Context, host, tor string) error {
	if err := tb.setLinks(ctx, host, tor, "up"); err != nil {
		return err
	}
	// Routes through a link vanish while it is down; put the host's static ones back.
	h, err := tb.st.host(host)
	if err != nil {
		return err
	}
	// The kernel brings the uplink's connected routes back a moment after the carrier returns.
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := tb.restoreHostRoutes(ctx, h)
		if err == nil || time.Now().After(deadline) || ctx.Err() != nil {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (tb *Testbed) setLinks(ctx context.Context, host, tor, state string) error {
	h, err := tb.st.host(host)
	if err != nil {
		return err
	}
	found := false
	for _, u := range h.Uplinks {
		if tor != "" && u.Tor != tor {
			continue
		}
		found = true
		t, err := tb.st.tor(u.Tor)
		if err != nil {
			return err
		}
		if err := ipIn(ctx, h.NS, "link", "set", u.HostIf, state); err != nil {
			return fmt.Errorf("set link %s %s: %w", host, state, err)
		}
		if err := ipIn(ctx, t.NS, "link", "set", u.TorIf, state); err != nil {
			return fmt.Errorf("set link %s %s: %w", host, state, err)
		}
	}
	if !found {
		return fmt.Errorf("set link %s/%s %s: %w: no such uplink", host, tor, state, ErrInvalid)
	}
	return nil
}

// restoreHostRoutes re-adds the host's underlay routes (replace, so it is harmless when present).
func (tb *Testbed) restoreHostRoutes(ctx context.Context, h *HostState) error {
	var cmds, gw4, gw6 []string
	for _, u := range h.Uplinks {
		if !linkUp(ctx, h.NS, u.HostIf) {
			continue
		}
		cmds = append(cmds, "route replace "+torBase(torIndex(u.Tor)).String()+"/24 via "+u.TorAddr+" dev "+u.HostIf)
		gw4 = append(gw4, u.TorAddr+" dev "+u.HostIf)
		if u.TorAddr6 != "" {
			gw6 = append(gw6, u.TorAddr6+" dev "+u.HostIf)
		}
	}
	if len(gw4) > 0 {
		cmds = append(cmds, strings.Replace(defaultRoute("default", gw4), "route add", "route replace", 1))
	}
	if len(gw6) > 0 {
		cmds = append(cmds, strings.Replace(defaultRoute("::/0", gw6), "route add", "route replace", 1))
	}
	return ipBatch(ctx, h.NS, cmds)
}

func linkUp(ctx context.Context, ns, dev string) bool {
	out, err := run(ctx, "ip", "-n", ns, "-o", "link", "show", "dev", dev)
	return err == nil && strings.Contains(out, ",UP")
}
