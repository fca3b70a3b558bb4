package testbed

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
)

// nsExec runs CNI plugins inside a host's network namespace, exactly as a runtime on that host
// would: the plugin's own process sees the host namespace, CNI_NETNS names the pod's.
type nsExec struct {
	ns string
	// extraEnv is appended to the CNI environment (TERRACE_* fallbacks of CONVENTIONS.md).
	extraEnv []string
}

func (e nsExec) ExecPlugin(ctx context.Context, pluginPath string, stdin []byte, environ []string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", e.ns, pluginPath)
	cmd.Env = append(environ, e.extraEnv...)
	cmd.Stdin = bytes.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		// A plugin reports failure as a CNI error object on stdout.
		var cniErr types.Error
		if json.Unmarshal(stdout.Bytes(), &cniErr) == nil && cniErr.Msg != "" {
			return nil, &cniErr
		}
		return nil, fmt.Errorf("run %s: %w: %s", filepath.Base(pluginPath), err,
			strings.TrimSpace(stdout.String()+" "+stderr.String()))
	}
	return stdout.Bytes(), nil
}

func (e nsExec) FindInPath(plugin string, paths []string) (string, error) {
	return invoke.FindInPath(plugin, paths)
}

func (e nsExec) Decode(b []byte) (version.PluginInfo, error) {
	return (&version.PluginDecoder{}).Decode(b)
}

// cniVersion asks bin/terrace-cni for its supported versions; an error means pods are wired by hand.
func (tb *Testbed) cniVersion(ctx context.Context) error {
	plugin := tb.bin("terrace-cni")
	if _, err := os.Stat(plugin); err != nil {
		return fmt.Errorf("find plugin: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, plugin)
	cmd.Env = append(os.Environ(), "CNI_COMMAND=VERSION")
	cmd.Stdin = strings.NewReader(`{"cniVersion":"1.0.0"}`)
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("ask %s for VERSION: %w", plugin, err)
	}
	info, err := (&version.PluginDecoder{}).Decode(out)
	if err != nil {
		return fmt.Errorf("ask %s for VERSION: %w", plugin, err)
	}
	if len(info.SupportedVersions()) == 0 {
		return fmt.Errorf("ask %s for VERSION: no supported versions", plugin)
	}
	return nil
}

// CNIAvailable reports whether pod add will use bin/terrace-cni.
func (tb *Testbed) CNIAvailable(ctx context.Context) bool { return tb.cniVersion(ctx) == nil }

// cniBinDir is the testbed's CNI_PATH. The network config names plugin types "terrace" and
// "terrace-ipam" (CONVENTIONS.md) while make builds bin/terrace-cni, so, like a CNI installer, the
// testbed links the type names to the binaries.
func (tb *Testbed) cniBinDir() (string, error) {
	dir := filepath.Join(tb.st.Options.StateDir, "cni-bin")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("create cni bin dir: %w", err)
	}
	ipam := tb.bin("terrace-ipam")
	if _, err := os.Stat(ipam); err != nil {
		ipam = tb.bin("terrace-cni")
	}
	for name, target := range map[string]string{"terrace": tb.bin("terrace-cni"), "terrace-ipam": ipam} {
		link := filepath.Join(dir, name)
		if cur, err := os.Readlink(link); err == nil && cur == target {
			continue
		}
		_ = os.Remove(link)
		if err := os.Symlink(target, link); err != nil {
			return "", fmt.Errorf("link cni plugin: %w", err)
		}
	}
	return dir, nil
}

func (tb *Testbed) cniConfig(h *HostState) (*libcni.CNIConfig, error) {
	dir, err := tb.cniBinDir()
	if err != nil {
		return nil, err
	}
	return libcni.NewCNIConfigWithCacheDir([]string{dir}, filepath.Join(h.Dir, "cni-cache"),
		nsExec{ns: h.NS, extraEnv: []string{"TERRACE_ETCD_ENDPOINTS=" + tb.st.Ctl.Endpoint,
			"TERRACE_NODE_SOCKET=" + h.Socket, "TERRACE_NODE_NAME=" + h.Name}}), nil
}

// loadConfList reads the host's network config list and adds the pod's labels to every plugin in
// the CNI `args.cni.labels` convention, which is how terrace-cni learns them.
func loadConfList(h *HostState, labels map[string]string) (*libcni.NetworkConfigList, error) {
	files, err := filepath.Glob(filepath.Join(h.ConfigDir, "*.conflist"))
	if err != nil || len(files) == 0 {
		return nil, fmt.Errorf("find network config in %s: none", h.ConfigDir)
	}
	sort.Strings(files)
	raw, err := os.ReadFile(files[0])
	if err != nil {
		return nil, fmt.Errorf("read network config: %w", err)
	}
	var list map[string]any
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, fmt.Errorf("parse network config %s: %w", files[0], err)
	}
	if len(labels) > 0 {
		var ls []map[string]string
		for _, k := range slices.Sorted(maps.Keys(labels)) {
			ls = append(ls, map[string]string{"key": k, "value": labels[k]})
		}
		plugins, _ := list["plugins"].([]any)
		for _, p := range plugins {
			if m, ok := p.(map[string]any); ok {
				m["args"] = map[string]any{"cni": map[string]any{"labels": ls}}
			}
		}
	}
	b, err := json.Marshal(list)
	if err != nil {
		return nil, fmt.Errorf("encode network config: %w", err)
	}
	conf, err := libcni.ConfListFromBytes(b)
	if err != nil {
		return nil, fmt.Errorf("parse network config %s: %w", files[0], err)
	}
	return conf, nil
}

func runtimeConf(pod PodState) *libcni.RuntimeConf {
	var caps map[string]any
	if len(pod.Requested) > 0 {
		ips := make([]string, len(pod.Requested))
		for i, a := range pod.Requested {
			ips[i] = a.String()
		}
		caps = map[string]any{"ips": ips}
	}
	return &libcni.RuntimeConf{
		CapabilityArgs: caps,
		ContainerID:    pod.ContainerID,
		NetNS:          filepath.Join(netnsDir, pod.NS),
		IfName:         "eth0",
		Args: [][2]string{
			{"IgnoreUnknown", "1"},
			{"K8S_POD_NAMESPACE", pod.Namespace},
			{"K8S_POD_NAME", pod.Name},
			{"K8S_POD_INFRA_CONTAINER_ID", pod.ContainerID},
		},
	}
}

// cniAdd calls the plugin chain's ADD as a container runtime does and records what it returned.
func (tb *Testbed) cniAdd(ctx context.Context, h *HostState, pod *PodState) error {
	list, err := loadConfList(h, pod.Labels)
	if err != nil {
		return err
	}
	cc, err := tb.cniConfig(h)
	if err != nil {
		return err
	}
	// Bounded, as a runtime bounds it: a plugin that hangs must not hold the state lock (and so
	// every other command, `down` included) for ever.
	actx, cancel := context.WithTimeout(ctx, cniAddTimeout)
	defer cancel()
	res, err := cc.AddNetworkList(actx, list, runtimeConf(*pod))
	if err != nil {
		return fmt.Errorf("cni add: %w", err)
	}
	r, err := current.NewResultFromResult(res)
	if err != nil {
		return fmt.Errorf("cni add: read result: %w", err)
	}
	for _, ip := range r.IPs {
		if ip.Address.IP.To4() != nil && pod.IPv4 == "" {
			pod.IPv4 = ip.Address.IP.String()
		} else if ip.Address.IP.To4() == nil && pod.IPv6 == "" {
			pod.IPv6 = ip.Address.IP.String()
		}
	}
	for _, itf := range r.Interfaces {
		if itf.Sandbox == "" {
			pod.HostIf = itf.Name
		}
	}
	if pod.IPv4 == "" && pod.IPv6 == "" {
		pod.IPv4, pod.IPv6 = podAddrs(ctx, pod.NS)
	}
	if pod.IPv4 == "" && pod.IPv6 == "" {
		// A pod without an address would silently drop out of every check.
		return errors.New("cni add: the plugin reported no address and the pod's eth0 has none")
	}
	return nil
}

// cniDel calls DEL; the plugin must treat missing pieces as success, so errors here are real ones.
func (tb *Testbed) cniDel(ctx context.Context, h *HostState, pod PodState) error {
	list, err := loadConfList(h, pod.Labels)
	if err != nil {
		return err
	}
	cc, err := tb.cniConfig(h)
	if err != nil {
		return err
	}
	dctx, cancel := context.WithTimeout(ctx, cniDelTimeout)
	defer cancel()
	if err := cc.DelNetworkList(dctx, list, runtimeConf(pod)); err != nil {
		return fmt.Errorf("cni del: %w", err)
	}
	return nil
}

// How long one CNI command may take here: far above a healthy ADD (tens of milliseconds, or a
// policy wait of a few seconds), well below "for ever".
const (
	cniAddTimeout = 2 * time.Minute
	cniDelTimeout = time.Minute
)
