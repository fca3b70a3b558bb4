package api

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"strings"

	"github.com/terracenet/terrace/datastore/selector"
)

// FieldError is one problem with one field.
type FieldError struct {
	Path   string // e.g. spec.ingress[0].destination.ports[1]
	Reason string
}

// ValidationError lists every problem found in one resource, so a user fixes them in one go.
type ValidationError struct {
	Kind      string
	Namespace string
	Name      string
	Fields    []FieldError
}

func (e *ValidationError) Error() string {
	var b strings.Builder
	b.WriteString("invalid ")
	b.WriteString(e.Kind)
	switch {
	case e.Namespace != "":
		fmt.Fprintf(&b, " %s/%s", e.Namespace, e.Name)
	case e.Name != "":
		fmt.Fprintf(&b, " %q", e.Name)
	}
	b.WriteString(": ")
	for i, f := range e.Fields {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(f.Path)
		b.WriteString(": ")
		b.WriteString(f.Reason)
	}
	return b.String()
}

// validator collects field errors for one resource.
type validator struct{ errs []FieldError }

func (v *validator) add(path, format string, args ...any) {
	v.errs = append(v.errs, FieldError{Path: path, Reason: fmt.Sprintf(format, args...)})
}

func idx(path string, i int) string { return fmt.Sprintf("%s[%d]", path, i) }

// Validate checks a resource and returns nil or a *ValidationError naming every bad field. It
// expects SetDefaults to have run (the datastore always does both); without it, some empty fields
// that defaults would fill are still accepted.
func Validate(r Resource) error {
	if r == nil {
		return errors.New("validate resource: nil resource")
	}
	info, err := KindOf(r)
	if err != nil {
		return fmt.Errorf("validate resource: %w", err)
	}
	v := &validator{}
	m := r.GetObjectMeta()
	v.meta(info, m)
	switch x := r.(type) {
	case *Node:
		v.node(x)
	case *IPPool:
		v.ipPool(&x.Spec)
	case *IPAMConfiguration:
		v.ipamConfig(x)
	case *BGPConfiguration:
		v.bgpConfig(x)
	case *BGPFilter:
		v.bgpFilter(&x.Spec)
	case *BGPPeer:
		v.bgpPeer(&x.Spec)
	case *FelixConfiguration:
		v.felixConfig(x)
	case *WorkloadEndpoint:
		v.workloadEndpoint(&x.Spec)
	case *HostEndpoint:
		v.hostEndpoint(&x.Spec)
	case *NetworkPolicy:
		s := &x.Spec
		v.policy(policyCommon{s.Tier, s.Order, s.Ingress, s.Egress, s.Selector, s.Types,
			s.ServiceAccountSelector, s.PerformanceHints})
	case *GlobalNetworkPolicy:
		s := &x.Spec
		v.policy(policyCommon{s.Tier, s.Order, s.Ingress, s.Egress, s.Selector, s.Types,
			s.ServiceAccountSelector, s.PerformanceHints})
		v.globalPolicyExtras(s)
	case *NetworkSet:
		v.nets("spec.nets", x.Spec.Nets, 0)
	case *GlobalNetworkSet:
		v.nets("spec.nets", x.Spec.Nets, 0)
	}
	if len(v.errs) == 0 {
		return nil
	}
	return &ValidationError{Kind: info.Kind, Namespace: m.Namespace, Name: m.Name, Fields: v.errs}
}

var (
	dnsLabelRE  = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	labelNameRE = regexp.MustCompile(`^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$`)
	portNameRE  = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	// portRangeTypoRE is "1000-2000", which would otherwise pass as a port name no endpoint has
	// (a Deny that matches nothing, a notPorts that matches everything).
	portRangeTypoRE = regexp.MustCompile(`^[0-9]+-[0-9]+$`)
	secretKeyRE     = regexp.MustCompile(`^[-._a-zA-Z0-9]+$`)
	ignoredIfaceRE  = regexp.MustCompile(`^[a-zA-Z0-9_.*-]{1,15}$`)
	communityRE     = regexp.MustCompile(`^[0-9]+:[0-9]+(:[0-9]+)?$`)
	// Calico's rule for interface names: they reach iptables-restore unquoted, so a quote, a
	// backslash, a '+' (iptables' wildcard) or a leading '-'/'!' must never get through.
	ifaceNameRE = regexp.MustCompile(`^[A-Za-z0-9_.][A-Za-z0-9_.-]*$`)
)

// subdomainError says why s is not an RFC 1123 subdomain (Calico's rule for resource names), or "".
func subdomainError(s string) string {
	if s == "" {
		return "must not be empty"
	}
	if len(s) > 253 {
		return fmt.Sprintf("is %d characters; at most 253 are allowed", len(s))
	}
	for _, l := range strings.Split(s, ".") {
		if len(l) > 63 || !dnsLabelRE.MatchString(l) {
			return "must be an RFC 1123 subdomain: lower-case letters, digits, '-' and '.', starting and ending with a letter or digit"
		}
	}
	return ""
}

// labelError says why s is not an RFC 1123 label (namespaces), or "".
func labelError(s string) string {
	if len(s) > 63 || !dnsLabelRE.MatchString(s) {
		return "must be an RFC 1123 label: at most 63 lower-case letters, digits and '-', starting and ending with a letter or digit"
	}
	return ""
}

func (v *validator) meta(info KindInfo, m *ObjectMeta) {
	if m.Name == "" {
		v.add("metadata.name", "is required")
	} else if e := subdomainError(m.Name); e != "" {
		v.add("metadata.name", "%s", e)
	}
	if info.Namespaced {
		if m.Namespace == "" {
			v.add("metadata.namespace", "is required: %s is namespaced", info.Kind)
		} else if e := labelError(m.Namespace); e != "" {
			v.add("metadata.namespace", "%s", e)
		}
	} else if m.Namespace != "" {
		v.add("metadata.namespace", "must be empty: %s is not namespaced", info.Kind)
	}
	if _, ok := m.Labels[selector.NamespaceLabel]; ok && !info.Namespaced {
		// Selectors tell namespaced entities by this label (global(), namespaceSelector): on a
		// host endpoint or global set it would forge namespace membership.
		v.add("metadata.labels["+selector.NamespaceLabel+"]", "is reserved: it marks namespaced resources, and %s is not namespaced", info.Kind)
	}
	v.labels("metadata.labels", m.Labels)
	total := 0
	for _, k := range slices.Sorted(maps.Keys(m.Annotations)) {
		if e := qualifiedNameError(k); e != "" {
			v.add("metadata.annotations["+k+"]", "key %s", e)
		}
		total += len(k) + len(m.Annotations[k])
	}
	if total > MaxAnnotationBytes {
		// Kubernetes' limit: every watcher of the kind receives the whole object on each change.
		v.add("metadata.annotations", "are %d bytes in all, more than %d (256 KiB)", total, MaxAnnotationBytes)
	}
}

// MaxAnnotationBytes bounds the keys and values of one object's annotations together, as
// Kubernetes does.
const MaxAnnotationBytes = 256 << 10

// ValidateLabels checks labels as a resource's metadata.labels would be checked, naming each bad
// one under path, so a caller that builds labels from its own input (the CNI plugin's
// args.cni.labels) can refuse them before it writes anything.
func ValidateLabels(path string, labels map[string]string) error {
	v := &validator{}
	v.labels(path, labels)
	if len(v.errs) == 0 {
		return nil
	}
	msgs := make([]string, len(v.errs))
	for i, f := range v.errs {
		msgs[i] = f.Path + ": " + f.Reason
	}
	return errors.New(strings.Join(msgs, "; "))
}

func (v *validator) labels(path string, labels map[string]string) {
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		val := labels[k]
		if e := qualifiedNameError(k); e != "" {
			v.add(path+"["+k+"]", "key %s", e)
		}
		if val != "" && (len(val) > 63 || !labelNameRE.MatchString(val)) {
			v.add(path+"["+k+"]", "value %q must be at most 63 letters, digits, '-', '_' and '.', starting and ending with a letter or digit", val)
		}
	}
}

// qualifiedNameError checks a Kubernetes-style label key: optional "prefix/" (a DNS subdomain) and
// a name of at most 63 characters.
func qualifiedNameError(k string) string {
	name := k
	if prefix, n, ok := strings.Cut(k, "/"); ok {
		if e := subdomainError(prefix); e != "" {
			return fmt.Sprintf("%q: prefix %s", k, e)
		}
		name = n
	}
	if len(name) == 0 || len(name) > 63 || !labelNameRE.MatchString(name) {
		return fmt.Sprintf("%q: name must be 1-63 letters, digits, '-', '_' and '.', starting and ending with a letter or digit", k)
	}
	return ""
}

func (v *validator) selector(path, s string) {
	if _, err := selector.Parse(s); err != nil {
		var pe *selector.ParseError
		if errors.As(err, &pe) {
			v.add(path, "invalid selector %q at column %d: %s", s, pe.Col, pe.Msg)
			return
		}
		v.add(path, "invalid selector %q: %v", s, err)
	}
}

// NormalizeCIDR parses a CIDR or a bare address (taken as /32 or /128) and returns it in canonical
// form with host bits cleared, as Calico stores pools and rule nets.
func NormalizeCIDR(s string) (string, error) {
	p, err := parsePrefixOrAddr(s)
	if err != nil {
		return "", err
	}
	return p.Masked().String(), nil
}

// ParseNet parses what NormalizeCIDR takes, for code that needs the prefix itself.
func ParseNet(s string) (netip.Prefix, error) {
	p, err := parsePrefixOrAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return p.Masked(), nil
}

func parsePrefixOrAddr(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("parse CIDR %q: %w", s, err)
		}
		if p.Addr().Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("parse CIDR %q: zones are not allowed", s)
		}
		return netip.PrefixFrom(p.Addr().Unmap(), unmappedBits(p)), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("parse CIDR %q: not an address or CIDR", s)
	}
	if a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("parse CIDR %q: zones are not allowed", s)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// unmappedBits keeps an IPv4-mapped IPv6 prefix meaningful once the address is unmapped.
func unmappedBits(p netip.Prefix) int {
	if p.Addr().Is4In6() {
		return max(p.Bits()-96, 0)
	}
	return p.Bits()
}

func parseAddr(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("not an IP address")
	}
	return a.Unmap(), nil
}

// family returns 4 or 6.
func family(a netip.Addr) int {
	if a.Is4() {
		return 4
	}
	return 6
}

// nets validates CIDR-or-address lists; ipVersion, when not 0, must match each entry.
func (v *validator) nets(path string, nets []string, ipVersion int) {
	for i, n := range nets {
		p, err := parsePrefixOrAddr(n)
		if err != nil {
			v.add(idx(path, i), "%q is not a CIDR or IP address", n)
			continue
		}
		if ipVersion != 0 && family(p.Addr()) != ipVersion {
			v.add(idx(path, i), "%q is IPv%d but the rule's ipVersion is %d", n, family(p.Addr()), ipVersion)
		}
	}
}

func (v *validator) ip(path, s string, want int) {
	if s == "" {
		return
	}
	a, err := parseAddr(s)
	if err != nil {
		v.add(path, "%q is not an IP address", s)
		return
	}
	if want != 0 && family(a) != want {
		v.add(path, "%q is not an IPv%d address", s, want)
	}
}

func (v *validator) port(path string, p Port, allowName bool) {
	if p.PortName != "" {
		switch {
		case strings.Contains(p.PortName, ":"):
			v.add(path, "%q is not a valid port range: want \"min:max\" with numbers 1-65535", p.PortName)
		case !allowName:
			v.add(path, "named port %q is not allowed here", p.PortName)
		case portRangeTypoRE.MatchString(p.PortName):
			v.add(path, "%q is not a port name; a port range is written \"min:max\" (did you mean %q?)", p.PortName, strings.Replace(p.PortName, "-", ":", 1))
		case !validPortName(p.PortName):
			v.add(path, "named port %q %s", p.PortName, portNameRule)
		}
		return
	}
	if err := checkPortRange(p.MinPort, p.MaxPort); err != nil {
		v.add(path, "%q: %v", p.String(), err)
	}
}

// portNameRule is Kubernetes' IsValidPortName, which Calico applies too.
const portNameRule = "must be 1-15 lower-case letters, digits and '-', with at least one letter and no '--' or '-' at either end"

func validPortName(s string) bool {
	return len(s) <= 15 && portNameRE.MatchString(s) && !strings.Contains(s, "--") && strings.ContainsAny(s, "abcdefghijklmnopqrstuvwxyz")
}

func (v *validator) portNumber(path string, n int, allowZero bool) {
	if (n == 0 && allowZero) || (n >= 1 && n <= 65535) {
		return
	}
	v.add(path, "port %d is out of range 1-65535", n)
}

func (v *validator) protocol(path string, p Protocol) {
	if p.Name != "" {
		if _, ok := CanonicalProtocolName(p.Name); !ok {
			v.add(path, "unknown protocol %q: want TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite or a number 1-255", p.Name)
		}
		return
	}
	if p.Number < 1 || p.Number > 255 {
		v.add(path, "protocol number %d is out of range 1-255", p.Number)
	}
}

func (v *validator) oneOf(path, val string, allowed ...string) bool {
	for _, a := range allowed {
		if val == a {
			return true
		}
	}
	v.add(path, "%q is not one of %s", val, strings.Join(allowed, ", "))
	return false
}

// NamespaceError says why s cannot name a namespace (an RFC 1123 label), or "".
func NamespaceError(s string) string { return labelError(s) }

// NameError says why s cannot be a resource name (an RFC 1123 subdomain), or "".
func NameError(s string) string { return subdomainError(s) }

// ValidInterfaceName says whether s follows the rule every interface name in the model follows.
func ValidInterfaceName(s string) bool {
	return len(s) <= 15 && s != "." && s != ".." && ifaceNameRE.MatchString(s)
}

func (v *validator) interfaceName(path, s string) {
	if s == "" {
		return
	}
	if !ValidInterfaceName(s) {
		v.add(path, "%q is not a valid interface name (at most 15 letters, digits, '_', '.' and '-', not starting with '-')", s)
	}
}

func (v *validator) mac(path, s string) {
	if s == "" {
		return
	}
	if _, err := net.ParseMAC(s); err != nil {
		v.add(path, "%q is not a MAC address", s)
	}
}

func (v *validator) float(path string, f *float64) {
	if f != nil && (math.IsNaN(*f) || math.IsInf(*f, 0)) {
		v.add(path, "must be a finite number")
	}
}

func (v *validator) duration(path string, d *Duration) {
	if d != nil && d.Duration < 0 {
		v.add(path, "must not be negative")
	}
}

// configName checks the "default" / "node.<name>" naming of BGPConfiguration and
// FelixConfiguration and reports whether this is the cluster-wide one.
func (v *validator) configName(kind, name string) bool {
	if name == DefaultConfigName {
		return true
	}
	node, ok := strings.CutPrefix(name, NodeConfigPrefix)
	if !ok || subdomainError(node) != "" {
		v.add("metadata.name", "a %s is named %q (cluster-wide) or %q followed by a node name", kind, DefaultConfigName, NodeConfigPrefix)
	}
	return false
}
