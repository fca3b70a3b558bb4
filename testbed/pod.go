package testbed

import (
	"context"
	"crypto/rand"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"
)

// PodSpec asks for a pod.
type PodSpec struct {
	Host      string
	Name      string
	Namespace string // Kubernetes-style namespace; "default" when empty
	Labels    map[string]string
	// IPs are addresses the pod asks for, passed as the runtime's "ips" capability argument
	// (runtimeConfig.ips); none: IPAM picks. Only terrace-cni honours them.
	IPs []netip.Addr
}

// ParseAddrs parses "198.18.0.5,2001:db8:1000::5" (an empty string is no address).
func ParseAddrs(s string) ([]netip.Addr, error) {
	var out []netip.Addr
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	for _, f := range strings.Split(s, ",") {
		a, err := netip.ParseAddr(strings.TrimSpace(f))
		if err != nil {
			return nil, fmt.Errorf("parse addresses %q: %w: %q is not an IP address", s, ErrInvalid, f)
		}
		if slices.Contains(out, a) {
			return nil, fmt.Errorf("parse addresses %q: %w: %s given twice", s, ErrInvalid, a)
		}
		out = append(out, a)
	}
	return out, nil
}

// ParseLabels parses "k=v,k2=v2".
func ParseLabels(s string) (map[string]string, error) {
	out := map[string]string{}
	if strings.TrimSpace(s) == "" {
		return out, nil
	}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok || !labelKeyRE.MatchString(k) || !labelValRE.MatchString(v) {
			return nil, fmt.Errorf("parse labels %q: %w: want key=value[,key=value]", s, ErrInvalid)
		}
		if _, dup := out[k]; dup {
			return nil, fmt.Errorf("parse labels %q: %w: key %q given twice", s, ErrInvalid, k)
		}
		out[k] = v
	}
	return out, nil
}

// podNS is the namespace name of a pod: <prefix><host>-<pod>.
func (tb *Testbed) podNS(host, pod string) string { return tb.st.Options.Prefix + host + "-" + pod }

// AddPod creates a pod on a host: its network namespace, then its network through terrace-cni (or
// the testbed's own wiring while the plugin is not available; see Options.CNI).
func (tb *Testbed) AddPod(ctx context.Context, spec PodSpec) (PodState, error) {
	if spec.Namespace == "" {
		spec.Namespace = "default"
	}
	if _, err := ParseTarget(spec.Host + "/" + spec.Name); err != nil {
		return PodState{}, fmt.Errorf("add pod: %w", err)
	}
	if !nameRE.MatchString(spec.Namespace) {
		return PodState{}, fmt.Errorf("add pod: %w: namespace %q is not a DNS label", ErrInvalid, spec.Namespace)
	}
	var pod PodState
	err := tb.update(func() error {
		h, err := tb.st.host(spec.Host)
		if err != nil {
			return err
		}
		if _, ok := tb.st.pod(spec.Host, spec.Name); ok {
			return fmt.Errorf("add pod %s/%s: %w: name already in use", spec.Host, spec.Name, ErrInvalid)
		}
		ns := tb.podNS(spec.Host, spec.Name)
		if nsExists(ns) {
			return fmt.Errorf("add pod %s/%s: %w: namespace %s already exists", spec.Host, spec.Name, ErrInvalid, ns)
		}
		mode, err := tb.podMode(ctx)
		if err != nil {
			return err
		}
		id := make([]byte, 16)
		_, _ = rand.Read(id)
		if len(spec.IPs) > 0 && mode != CNIPlugin {
			return fmt.Errorf("add pod %s/%s: %w: requested addresses need terrace-cni, and this testbed wires pods itself", spec.Host, spec.Name, ErrInvalid)
		}
		pod = PodState{Host: spec.Host, Name: spec.Name, Namespace: spec.Namespace, NS: ns,
			ContainerID: hex.EncodeToString(id), Labels: spec.Labels, Mode: mode, Requested: spec.IPs}
		if err := addNamespace(ctx, ns); err != nil {
			return fmt.Errorf("add pod %s/%s: %w", spec.Host, spec.Name, err)
		}
		if mode == CNIPlugin {
			err = tb.cniAdd(ctx, h, &pod)
		} else {
			err = tb.manualAdd(ctx, h, &pod)
		}
		if err != nil {
			// Undo everything this ADD did; a DEL is what a runtime does after a failed ADD.
			undo := tb.delPodNetwork(context.WithoutCancel(ctx), h, pod)
			return errors.Join(fmt.Errorf("add pod %s/%s: %w", spec.Host, spec.Name, err), undo, delNamespace(ctx, ns))
		}
		tb.st.Pods = append(tb.st.Pods, pod)
		return nil
	})
	return pod, err
}

// DelPod deletes a pod (network first, then its namespace). Deleting a pod that does not exist is an error.
func (tb *Testbed) DelPod(ctx context.Context, host, name string) error {
	return tb.update(func() error {
		i, ok := tb.st.pod(host, name)
		if !ok {
			return fmt.Errorf("delete pod %s/%s: %w: no such pod", host, name, ErrInvalid)
		}
		pod := tb.st.Pods[i]
		h, err := tb.st.host(host)
		if err != nil {
			return err
		}
		killNamespacePids(ctx, pod.NS)
		err = errors.Join(tb.delPodNetwork(ctx, h, pod), delNamespace(ctx, pod.NS))
		if err != nil {
			return fmt.Errorf("delete pod %s/%s: %w", host, name, err)
		}
		tb.st.Pods = slices.Delete(tb.st.Pods, i, i+1)
		return nil
	})
}

// Pods lists the pods, ordered by host then name.
func (tb *Testbed) Pods() []PodState {
	out := slices.Clone(tb.st.Pods)
	slices.SortFunc(out, func(a, b PodState) int {
		if c := hostOrder(a.Host) - hostOrder(b.Host); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
	return out
}

func hostOrder(h string) int {
	var n int
	fmt.Sscanf(h, "host-%d", &n)
	return n
}

func (tb *Testbed) delPodNetwork(ctx context.Context, h *HostState, pod PodState) error {
	if pod.Mode == CNIPlugin {
		return tb.cniDel(ctx, h, pod)
	}
	return tb.manualDel(ctx, h, pod)
}

// podMode decides how this pod is wired; "auto" asks the plugin whether it works at all.
func (tb *Testbed) podMode(ctx context.Context) (CNIMode, error) {
	switch tb.st.Options.CNI {
	case CNIManual:
		return CNIManual, nil
	case CNIPlugin:
		if err := tb.cniVersion(ctx); err != nil {
			return "", fmt.Errorf("use terrace-cni: %w", err)
		}
		return CNIPlugin, nil
	}
	// "auto" is decided by the fabric's first pod and kept: a plugin that fails to answer once (a
	// binary being rebuilt, a loaded machine) must not wire one pod by hand beside IPAM's pods,
	// whose addresses the hand-wired one could duplicate.
	for _, p := range tb.st.Pods {
		switch p.Mode {
		case CNIPlugin:
			if err := tb.cniVersion(ctx); err != nil {
				return "", fmt.Errorf("use terrace-cni as for the fabric's other pods: %w", err)
			}
			return CNIPlugin, nil
		case CNIManual:
			return CNIManual, nil
		}
	}
	if tb.cniVersion(ctx) == nil {
		return CNIPlugin, nil
	}
	return CNIManual, nil
}

// hostIfName follows CONVENTIONS.md: "trc" + 11 hex characters of a hash of the workload identity.
func hostIfName(namespace, pod string) string {
	sum := sha1.Sum([]byte(namespace + "." + pod))
	return "trc" + hex.EncodeToString(sum[:])[:11]
}

// manualAdd wires the pod the way CONVENTIONS.md describes, without IPAM or a WorkloadEndpoint:
// the address is the lowest free one of the host's 198.18.<i>.0/24. It exists only until
// terrace-cni works, and pods wired this way are marked so in pod list.
func (tb *Testbed) manualAdd(ctx context.Context, h *HostState, pod *PodState) error {
	addr, err := tb.freeManualAddr(h, false)
	if err != nil {
		return err
	}
	pod.IPv4 = addr.String()
	if tb.st.Options.IPv6 {
		a6, err := tb.freeManualAddr(h, true)
		if err != nil {
			return err
		}
		pod.IPv6 = a6.String()
	}
	pod.HostIf = hostIfName(pod.Namespace, pod.Name)
	if err := ipIn(ctx, h.NS, "link", "add", pod.HostIf, "address", "ee:ee:ee:ee:ee:ee", "type", "veth",
		"peer", "name", "eth0", "netns", pod.NS); err != nil {
		return err
	}
	kv := []string{
		"net.ipv4.conf." + pod.HostIf + ".proxy_arp=1",
		"net.ipv4.neigh." + pod.HostIf + ".proxy_delay=0",
		"net.ipv4.conf." + pod.HostIf + ".forwarding=1",
	}
	if pod.IPv6 != "" {
		kv = append(kv, "net.ipv6.conf."+pod.HostIf+".proxy_ndp=1", "net.ipv6.conf."+pod.HostIf+".accept_dad=0")
	}
	if err := sysctlIn(ctx, h.NS, kv...); err != nil {
		return err
	}
	if pod.IPv6 != "" {
		if err := sysctlIn(ctx, pod.NS, "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0"); err != nil {
			return err
		}
	}
	podCmds := []string{
		"addr add " + pod.IPv4 + "/32 dev eth0",
		"link set eth0 up",
		"route add 169.254.1.1 dev eth0 scope link",
		"route add default via 169.254.1.1 dev eth0",
	}
	hostCmds := []string{
		"link set " + pod.HostIf + " up",
		"route add " + pod.IPv4 + "/32 dev " + pod.HostIf + " scope link",
	}
	if pod.IPv6 != "" {
		podCmds = append(podCmds, "addr add "+pod.IPv6+"/128 dev eth0 nodad",
			"route add ::/0 via fe80::ecee:eeff:feee:eeee dev eth0")
		hostCmds = append(hostCmds, "route add "+pod.IPv6+"/128 dev "+pod.HostIf)
	}
	if err := ipBatch(ctx, pod.NS, podCmds); err != nil {
		return err
	}
	return ipBatch(ctx, h.NS, hostCmds)
}

func (tb *Testbed) freeManualAddr(h *HostState, v6 bool) (netip.Addr, error) {
	used := map[netip.Addr]bool{}
	for _, p := range tb.st.Pods {
		for _, s := range []string{p.IPv4, p.IPv6} {
			if a, err := netip.ParseAddr(s); err == nil {
				used[a] = true
			}
		}
	}
	net := manualPodNet(h.Index)
	if v6 {
		net = manualPodNet6(h.Index)
	}
	a := net.Addr().Next().Next() // .0 and .1 are left alone
	for k := 0; k < 250; k++ {
		if !used[a] {
			return a, nil
		}
		a = a.Next()
	}
	return netip.Addr{}, fmt.Errorf("allocate pod address: %s is full", net)
}

// manualDel removes the host side (deleting the veth removes both ends and the /32 route with it).
func (tb *Testbed) manualDel(ctx context.Context, h *HostState, pod PodState) error {
	if pod.HostIf == "" || !nsExists(h.NS) {
		return nil
	}
	out, err := run(ctx, "ip", "-n", h.NS, "-o", "link", "show", "dev", pod.HostIf)
	if err != nil || out == "" {
		return nil // already gone: DEL is idempotent
	}
	return ipIn(ctx, h.NS, "link", "del", pod.HostIf)
}

// writeCNIConfig writes each host's network config list, with Calico's keys (CONVENTIONS.md).
func (tb *Testbed) writeCNIConfig() error {
	for _, h := range tb.st.Hosts {
		ipam := map[string]any{"type": "terrace-ipam", "assign_ipv4": "true", "assign_ipv6": fmt.Sprint(tb.st.Options.IPv6)}
		conf := map[string]any{
			// 1.1.0 so runtimes may also call STATUS and GC.
			"name": "terrace", "cniVersion": "1.1.0",
			"plugins": []any{map[string]any{
				"type": "terrace", "etcd_endpoints": tb.st.Ctl.Endpoint, "nodename": h.Name,
				"mtu": 1500, "log_level": tb.st.Options.LogLevel, "node_socket": h.Socket,
				"log_file_path": filepath.Join(h.Dir, "cni.log"), "ipam": ipam,
				// A pod must never run before its policy is in the kernel (Calico lets it: #9706).
				"policy_setup_timeout_seconds": 10,
				// Requested addresses (pod add --ip) come as the runtime's capability argument.
				"capabilities": map[string]any{"ips": true},
			}},
		}
		b, err := json.MarshalIndent(conf, "", "  ")
		if err != nil {
			return fmt.Errorf("encode cni config: %w", err)
		}
		if err := os.WriteFile(filepath.Join(h.ConfigDir, "10-terrace.conflist"), b, 0o644); err != nil {
			return fmt.Errorf("write cni config: %w", err)
		}
	}
	return nil
}

// podAddrs reads the global addresses of a pod's eth0 (what the CNI plugin gave it).
func podAddrs(ctx context.Context, ns string) (v4, v6 string) {
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		out, err := run(ctx, "ip", "-n", ns, "-o", "addr", "show", "dev", "eth0", "scope", "global")
		if err == nil {
			for _, line := range strings.Split(out, "\n") {
				f := strings.Fields(line)
				for k := 0; k+1 < len(f); k++ {
					if p, err := netip.ParsePrefix(f[k+1]); err == nil && (f[k] == "inet" || f[k] == "inet6") {
						if p.Addr().Is4() && v4 == "" {
							v4 = p.Addr().String()
						} else if p.Addr().Is6() && v6 == "" {
							v6 = p.Addr().String()
						}
					}
				}
			}
			if v4 != "" || v6 != "" {
				return v4, v6
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return v4, v6
}

// FormatLabels renders labels as k=v,k2=v2 in key order, the form --labels takes.
func FormatLabels(m map[string]string) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, k+"="+m[k])
	}
	return strings.Join(parts, ",")
}

var (
	labelKeyRE = regexp.MustCompile(`^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$`)
	labelValRE = regexp.MustCompile(`^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$`)
)
