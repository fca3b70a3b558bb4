package api

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// decodeOne decodes a single-document manifest that must decode cleanly.
func decodeOne(t *testing.T, manifest string) Resource {
	t.Helper()
	docs, err := Decode([]byte(manifest))
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	if len(docs) != 1 || docs[0].Err != nil {
		t.Fatalf("Decode: want one clean document, got %+v", docs)
	}
	return docs[0].Resource
}

// fieldPaths runs defaults and validation and returns the paths of the field errors (nil if valid).
func fieldPaths(t *testing.T, r Resource) []string {
	t.Helper()
	var paths []string
	for _, f := range validationFields(t, r) {
		paths = append(paths, f.Path)
	}
	return paths
}

// validationFields runs defaults and validation and returns the field errors (nil if valid),
// checking that the error names the resource and each field with its reason.
func validationFields(t *testing.T, r Resource) []FieldError {
	t.Helper()
	SetDefaults(r)
	err := Validate(r)
	if err == nil {
		return nil
	}
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("Validate returned %T, want *ValidationError: %v", err, err)
	}
	info, _ := KindOf(r)
	if ve.Kind != info.Kind || ve.Name != r.GetObjectMeta().Name || ve.Namespace != r.GetObjectMeta().Namespace {
		t.Errorf("ValidationError names %s %s/%s, want %s %s/%s", ve.Kind, ve.Namespace, ve.Name,
			info.Kind, r.GetObjectMeta().Namespace, r.GetObjectMeta().Name)
	}
	for _, f := range ve.Fields {
		if f.Reason == "" {
			t.Errorf("field %s has no reason", f.Path)
		}
		if !strings.Contains(err.Error(), f.Path+": "+f.Reason) {
			t.Errorf("Error() %q does not name %s: %s", err.Error(), f.Path, f.Reason)
		}
	}
	return ve.Fields
}

type validationCase struct {
	name     string
	manifest string
	want     []string // field paths; nil = valid
}

func runValidationCases(t *testing.T, cases []validationCase) {
	t.Helper()
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			got := fieldPaths(t, decodeOne(t, tt.manifest))
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("field errors (-want +got):\n%s", diff)
			}
		})
	}
}

const hdr = "apiVersion: terrace.dev/v1\n"

func TestValidateMeta(t *testing.T) {
	runValidationCases(t, []validationCase{
		{"valid", hdr + "kind: Node\nmetadata:\n  name: host-1.example\n  labels: {a: b, example.com/c: d-e_f.g, empty: ''}\n  annotations: {x.io/y: anything at all}\n", nil},
		{"annotations at the size limit", hdr + "kind: Node\nmetadata:\n  name: n\n  annotations: {a: " + strings.Repeat("x", MaxAnnotationBytes-1) + "}\n", nil},
		{"annotations over the size limit", hdr + "kind: Node\nmetadata:\n  name: n\n  annotations: {a: " + strings.Repeat("x", MaxAnnotationBytes/2) + ", b: " + strings.Repeat("y", MaxAnnotationBytes/2) + "}\n",
			[]string{"metadata.annotations"}},
		{"missing name", hdr + "kind: Node\nmetadata: {}\n", []string{"metadata.name"}},
		{"upper case name", hdr + "kind: Node\nmetadata: {name: Host1}\n", []string{"metadata.name"}},
		{"name too long", hdr + "kind: Node\nmetadata: {name: " + strings.Repeat("a", 254) + "}\n", []string{"metadata.name"}},
		{"label too long", hdr + "kind: Node\nmetadata: {name: a, labels: {" + strings.Repeat("k", 64) + ": v}}\n", []string{"metadata.labels[" + strings.Repeat("k", 64) + "]"}},
		{"bad label value", hdr + "kind: Node\nmetadata: {name: a, labels: {a: -bad-}}\n", []string{"metadata.labels[a]"}},
		{"bad label prefix", hdr + "kind: Node\nmetadata: {name: a, labels: {Bad_Prefix/a: b}}\n", []string{"metadata.labels[Bad_Prefix/a]"}},
		{"namespace on global kind", hdr + "kind: GlobalNetworkSet\nmetadata: {name: a, namespace: x}\n", []string{"metadata.namespace"}},
		{"namespaced kind needs namespace", hdr + "kind: NetworkSet\nmetadata: {name: a}\n", []string{"metadata.namespace"}},
		{"namespace is a label", hdr + "kind: NetworkSet\nmetadata: {name: a, namespace: a.b}\n", []string{"metadata.namespace"}},
	})
}

func TestValidateIPPool(t *testing.T) {
	pool := func(spec string) string { return hdr + "kind: IPPool\nmetadata: {name: p}\nspec:\n" + spec }
	runValidationCases(t, []validationCase{
		{"minimal v4", pool("  cidr: 198.18.0.0/16\n"), nil},
		{"minimal v6", pool("  cidr: 2001:db8:1000::/48\n"), nil},
		{"host bits are cleared by defaults", pool("  cidr: 198.18.3.4/16\n"), nil},
		{"explicit Never", pool("  cidr: 198.18.0.0/16\n  ipipMode: Never\n  vxlanMode: Never\n  blockSize: 24\n"), nil},
		{"missing cidr", pool("  natOutgoing: true\n"), []string{"spec.cidr"}},
		{"bad cidr", pool("  cidr: 198.18.0.0/33\n"), []string{"spec.cidr"}},
		{"link-local", pool("  cidr: 169.254.0.0/16\n"), []string{"spec.cidr"}},
		{"ipv6 link-local", pool("  cidr: fe80::/64\n"), []string{"spec.cidr"}},
		{"this network", pool("  cidr: 0.0.0.0/16\n"), []string{"spec.cidr"}},
		{"class E", pool("  cidr: 240.0.0.0/24\n"), []string{"spec.cidr"}},
		{"block too small v4", pool("  cidr: 198.18.0.0/16\n  blockSize: 19\n"), []string{"spec.blockSize"}},
		{"block /33", pool("  cidr: 198.18.0.0/16\n  blockSize: 33\n"), []string{"spec.blockSize"}},
		{"v4 block size on v6 pool", pool("  cidr: 2001:db8::/48\n  blockSize: 26\n"), []string{"spec.blockSize"}},
		{"v6 block range ok", pool("  cidr: 2001:db8::/112\n  blockSize: 116\n"), nil},
		{"v6 default block larger than pool", pool("  cidr: 2001:db8::/124\n"), []string{"spec.blockSize"}},
		{"block larger than pool", pool("  cidr: 198.18.0.0/28\n"), []string{"spec.blockSize"}},
		{"block /32 in /32 pool", pool("  cidr: 198.18.0.1/32\n  blockSize: 32\n"), nil},
		{"encapsulation refused", pool("  cidr: 198.18.0.0/16\n  ipipMode: Always\n  vxlanMode: CrossSubnet\n"), []string{"spec.ipipMode", "spec.vxlanMode"}},
		{"unknown encapsulation", pool("  cidr: 198.18.0.0/16\n  ipipMode: always\n"), []string{"spec.ipipMode"}},
		{"bad selector", pool("  cidr: 198.18.0.0/16\n  nodeSelector: \"rack == \"\n"), []string{"spec.nodeSelector"}},
		{"allowed uses", pool("  cidr: 198.18.0.0/16\n  allowedUses: [Workload, LoadBalancer, Bogus]\n"), []string{"spec.allowedUses[1]", "spec.allowedUses[2]"}},
		{"manual assignment", pool("  cidr: 198.18.0.0/16\n  assignmentMode: Manual\n"), []string{"spec.assignmentMode"}},
		{"several at once", pool("  cidr: 10.0.0.0/8\n  blockSize: 40\n  ipipMode: Always\n  nodeSelector: \"!!\"\n"), []string{"spec.blockSize", "spec.ipipMode", "spec.nodeSelector"}},
	})
}

func TestValidateSelectorReportsColumn(t *testing.T) {
	r := decodeOne(t, hdr+"kind: IPPool\nmetadata: {name: p}\nspec: {cidr: 198.18.0.0/16, nodeSelector: \"a == 'b' &&\"}\n")
	SetDefaults(r)
	err := Validate(r)
	if err == nil || !strings.Contains(err.Error(), "spec.nodeSelector: invalid selector \"a == 'b' &&\" at column") {
		t.Errorf("Validate = %v, want the selector error with its column", err)
	}
}

func TestIPPoolDefaults(t *testing.T) {
	r := decodeOne(t, hdr+"kind: IPPool\nmetadata: {name: p}\nspec: {cidr: '2001:db8:1000::5/48'}\n")
	SetDefaults(r)
	want := IPPoolSpec{CIDR: "2001:db8:1000::/48", BlockSize: 122, IPIPMode: "Never", VXLANMode: "Never",
		NodeSelector: "all()", AllowedUses: []string{"Workload", "Tunnel"}, AssignmentMode: "Automatic"}
	if diff := cmp.Diff(want, r.(*IPPool).Spec); diff != "" {
		t.Errorf("defaults (-want +got):\n%s", diff)
	}
	r = decodeOne(t, hdr+"kind: IPPool\nmetadata: {name: p}\nspec: {cidr: 198.18.0.0/15}\n")
	SetDefaults(r)
	if bs := r.(*IPPool).Spec.BlockSize; bs != 26 {
		t.Errorf("IPv4 default block size = %d, want 26", bs)
	}
}

func TestCheckPoolOverlap(t *testing.T) {
	mk := func(name, cidr string) *IPPool {
		return &IPPool{Metadata: ObjectMeta{Name: name}, Spec: IPPoolSpec{CIDR: cidr}}
	}
	others := []*IPPool{mk("a", "198.18.0.0/16"), mk("b", "2001:db8:1000::/48"), mk("c", "198.19.0.0/24")}
	tests := []struct {
		pool *IPPool
		want []string // names it overlaps
	}{
		{mk("new", "198.19.1.0/24"), nil},
		{mk("new", "198.18.5.0/24"), []string{`"a"`}},
		{mk("new", "198.18.0.0/15"), []string{`"a"`, `"c"`}},
		{mk("new", "2001:db8:1000:5::/64"), []string{`"b"`}},
		{mk("a", "198.18.0.0/17"), nil}, // replacing pool a itself
	}
	for _, tt := range tests {
		err := CheckPoolOverlap(tt.pool, others)
		var got []string
		if err != nil {
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("CheckPoolOverlap returned %T", err)
			}
			for _, f := range ve.Fields {
				if f.Path != "spec.cidr" {
					t.Errorf("path %q, want spec.cidr", f.Path)
				}
				got = append(got, strings.Fields(strings.SplitAfter(f.Reason, "IPPool ")[1])[0])
			}
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("CheckPoolOverlap(%s) (-want +got):\n%s", tt.pool.Spec.CIDR, diff)
		}
	}
}

func TestValidateIPAMConfiguration(t *testing.T) {
	runValidationCases(t, []validationCase{
		{"valid", hdr + "kind: IPAMConfiguration\nmetadata: {name: default}\nspec: {strictAffinity: true, maxBlocksPerHost: 4}\n", nil},
		{"bad name and values", hdr + "kind: IPAMConfiguration\nmetadata: {name: other}\nspec: {maxBlocksPerHost: -1, autoAllocateBlocks: false}\n",
			[]string{"metadata.name", "spec.maxBlocksPerHost", "spec.autoAllocateBlocks"}},
	})
}

func TestValidateNode(t *testing.T) {
	node := func(spec string) string { return hdr + "kind: Node\nmetadata: {name: host-1}\nspec:\n" + spec }
	runValidationCases(t, []validationCase{
		{"valid", node("  bgp:\n    ipv4Address: 192.0.2.10/24\n    ipv6Address: 2001:db8::10\n    asNumber: '1.10'\n    routeReflectorClusterID: 224.0.0.1\n  addresses:\n  - {address: 192.0.2.10, type: InternalIP}\n  orchRefs:\n  - {nodeName: h1, orchestrator: k8s}\n"), nil},
		{"status", hdr + "kind: Node\nmetadata: {name: h}\nstatus:\n  autodetection: {method: can-reach=192.0.2.1, ipv4: 192.0.2.10, interface: eth0, reason: route to 192.0.2.1}\n", nil},
		{"bad status address", hdr + "kind: Node\nmetadata: {name: h}\nstatus:\n  autodetection: {ipv4: '2001:db8::1'}\n", []string{"status.autodetection.ipv4"}},
		{"wrong families", node("  bgp:\n    ipv4Address: 2001:db8::1/64\n    ipv6Address: 192.0.2.1\n"), []string{"spec.bgp.ipv4Address", "spec.bgp.ipv6Address"}},
		{"garbage address", node("  bgp: {ipv4Address: 'host'}\n"), []string{"spec.bgp.ipv4Address"}},
		{"AS zero", node("  bgp: {asNumber: 0}\n"), []string{"spec.bgp.asNumber"}},
		{"tunnels refused", node("  bgp: {ipv4IPIPTunnelAddr: 198.18.0.1}\n  ipv4VXLANTunnelAddr: 198.18.0.2\n  wireguard: {interfaceIPv4Address: 198.18.0.3}\n"),
			[]string{"spec.bgp.ipv4IPIPTunnelAddr", "spec.ipv4VXLANTunnelAddr", "spec.wireguard"}},
		{"bad cluster ID", node("  bgp: {routeReflectorClusterID: rr1}\n"), []string{"spec.bgp.routeReflectorClusterID"}},
		{"addresses", node("  addresses:\n  - {address: x}\n  - {address: 192.0.2.1, type: Public}\n  - {type: InternalIP}\n"),
			[]string{"spec.addresses[0].address", "spec.addresses[1].type", "spec.addresses[2].address"}},
	})
}

func TestValidateEndpoints(t *testing.T) {
	wep := func(spec string) string {
		return hdr + "kind: WorkloadEndpoint\nmetadata: {name: host-1-k8s-web-eth0, namespace: prod}\nspec:\n  node: host-1\n" + spec
	}
	hep := func(spec string) string { return hdr + "kind: HostEndpoint\nmetadata: {name: h1-eth0}\nspec:\n" + spec }
	runValidationCases(t, []validationCase{
		{"wep valid", wep("  interfaceName: trc0123456789a\n  mac: ee:ee:ee:ee:ee:ee\n  ipNetworks: [198.18.0.5/32, '2001:db8:1000::5']\n  ipNATs: [{internalIP: 198.18.0.5, externalIP: 192.0.2.99}]\n  ports: [{name: http, protocol: TCP, port: 80, hostPort: 8080, hostIP: 192.0.2.1}]\n  profiles: [kns.prod]\n"), nil},
		{"wep needs node", hdr + "kind: WorkloadEndpoint\nmetadata: {name: w, namespace: p}\nspec: {}\n", []string{"spec.node"}},
		{"wep bad fields", wep("  interfaceName: this-name-is-too-long\n  mac: zz\n  ipNetworks: [nope]\n  ipv4Gateway: '2001:db8::1'\n  ipNATs: [{internalIP: x}]\n"),
			[]string{"spec.interfaceName", "spec.ipNetworks[0]", "spec.ipNATs[0].externalIP", "spec.ipNATs[0].internalIP", "spec.ipv4Gateway", "spec.mac"}},
		{"wep spoofing refused", wep("  allowSpoofedSourcePrefixes: [198.18.0.0/16]\n"), []string{"spec.allowSpoofedSourcePrefixes"}},
		{"wep ports", wep("  ports:\n  - {name: HTTP, protocol: ICMP, port: 0}\n  - {name: ok, protocol: UDP, port: 53, hostPort: 70000}\n"),
			[]string{"spec.ports[0].name", "spec.ports[0].protocol", "spec.ports[0].port", "spec.ports[1].hostPort"}},
		{"hep valid by name", hep("  node: host-1\n  interfaceName: eth0\n"), nil},
		{"hep all interfaces", hep("  node: host-1\n  interfaceName: '*'\n"), nil},
		{"hep by expected IP", hep("  node: host-1\n  expectedIPs: [192.0.2.10]\n  ports: [{name: ssh, protocol: TCP, port: 22}]\n"), nil},
		{"hep needs interface", hep("  node: host-1\n"), []string{"spec.interfaceName"}},
		{"hep interface with a quote", hep("  node: host-1\n  interfaceName: 'eth\"1'\n"), []string{"spec.interfaceName"}},
		{"hep interface wildcard", hep("  node: host-1\n  interfaceName: eth+\n"), []string{"spec.interfaceName"}},
		{"hep interface leading dash", hep("  node: host-1\n  interfaceName: -j\n"), []string{"spec.interfaceName"}},
		{"hep vlan interface", hep("  node: host-1\n  interfaceName: eth0.100\n"), nil},
		{"wep network /0", wep("  interfaceName: trc0123456789a\n  ipNetworks: [0.0.0.0/0, '::/0', 198.18.0.5/32]\n"), []string{"spec.ipNetworks[0]", "spec.ipNetworks[1]"}},
		// A workload's networks are single addresses: 198.18.0.5/24 (a typo for /32) would give the
		// pod a whole /24, in its routes and in every set that selects it.
		{"wep network wider than one address", wep("  interfaceName: trc0123456789a\n  ipNetworks: [198.18.0.5/24, '2001:db8::5/64', 198.18.0.6, '2001:db8::6/128']\n"),
			[]string{"spec.ipNetworks[0]", "spec.ipNetworks[1]"}},
		{"wep port name of digits", wep("  ports: [{name: '8080', protocol: TCP, port: 8080}, {name: 'a--b', protocol: TCP, port: 1}]\n"),
			[]string{"spec.ports[0].name", "spec.ports[1].name"}},
		// The namespace label is what selectors tell namespaced entities by.
		{"hep with the namespace label", hdr + "kind: HostEndpoint\nmetadata: {name: h1-eth0, labels: {projectcalico.org/namespace: prod}}\nspec: {node: host-1, interfaceName: eth0}\n",
			[]string{"metadata.labels[projectcalico.org/namespace]"}},
		{"global set with the namespace label", hdr + "kind: GlobalNetworkSet\nmetadata: {name: s, labels: {projectcalico.org/namespace: prod}}\nspec: {nets: [198.18.0.0/16]}\n",
			[]string{"metadata.labels[projectcalico.org/namespace]"}},
		{"namespaced set with the namespace label", hdr + "kind: NetworkSet\nmetadata: {name: s, namespace: prod, labels: {projectcalico.org/namespace: prod}}\nspec: {nets: [198.18.0.0/16]}\n", nil},
		{"hep bad", hep("  interfaceName: 'a b'\n  expectedIPs: [x]\n"), []string{"spec.node", "spec.interfaceName", "spec.expectedIPs[0]"}},
	})
}

func TestValidateBGP(t *testing.T) {
	peer := func(spec string) string { return hdr + "kind: BGPPeer\nmetadata: {name: tor-1}\nspec:\n" + spec }
	conf := func(name, spec string) string {
		return hdr + "kind: BGPConfiguration\nmetadata: {name: " + name + "}\nspec:\n" + spec
	}
	runValidationCases(t, []validationCase{
		{"global peer", peer("  peerIP: 192.0.2.1\n  asNumber: 65001\n"), nil},
		{"secret keys naming directories", peer("  peerIP: 192.0.2.1\n  asNumber: 65000\n  password: {secretKeyRef: {name: s, key: '..'}}\n"), []string{"spec.password.secretKeyRef.key"}},
		{"secret key dot", peer("  peerIP: 192.0.2.1\n  asNumber: 65000\n  password: {secretKeyRef: {name: s, key: '.'}}\n"), []string{"spec.password.secretKeyRef.key"}},
		{"secret key with a dot inside", peer("  peerIP: 192.0.2.1\n  asNumber: 65000\n  password: {secretKeyRef: {name: s, key: tor.pw}}\n"), nil},
		{"node peer with port, dotted AS and options", peer("  node: host-1\n  peerIP: '[2001:db8::1]:1179'\n  asNumber: '1.10'\n  password: {secretKeyRef: {name: bgp-secrets, key: tor-1}}\n  keepaliveTime: 10s\n  holdTime: 30s\n  maxRestartTime: 2m\n  sourceAddress: None\n  nextHopMode: Self\n  ebgpMultihopTTL: 2\n"), nil},
		{"selector peers", peer("  nodeSelector: rack == 'a'\n  peerSelector: has(route-reflector)\n"), nil},
		{"password file", peer("  peerIP: 192.0.2.1\n  asNumber: 65001\n  password: {file: /etc/terrace/tor.pw}\n"), nil},
		{"needs peer", peer("  asNumber: 65001\n"), []string{"spec.peerIP"}},
		{"peerIP needs AS", peer("  peerIP: 192.0.2.1\n"), []string{"spec.asNumber"}},
		{"both", peer("  node: a\n  nodeSelector: all()\n  peerIP: 192.0.2.1\n  peerSelector: all()\n  asNumber: 1\n"), []string{"spec.nodeSelector", "spec.peerSelector"}},
		{"peerSelector with AS", peer("  peerSelector: all()\n  asNumber: 65001\n"), []string{"spec.asNumber"}},
		{"bad peer IP", peer("  peerIP: 192.0.2.1:0\n  asNumber: 1\n"), []string{"spec.peerIP"}},
		{"bad options", peer("  peerIP: 192.0.2.1\n  asNumber: 1\n  password: {file: relative}\n  holdTime: 2s\n  keepaliveTime: 5s\n  sourceAddress: Any\n  failureDetectionMode: BFDIfDirectlyConnected\n  restartMode: LongLivedGracefulRestart\n  filters: [Bad_Name]\n  ttlSecurity: 1\n  nextHopMode: Other\n  numAllowedLocalASNumbers: 1\n  reachableBy: 192.0.2.254\n  ebgpMultihopTTL: 0\n"),
			[]string{"spec.nextHopMode", "spec.password.file", "spec.sourceAddress", "spec.failureDetectionMode", "spec.restartMode", "spec.holdTime", "spec.keepaliveTime",
				"spec.numAllowedLocalASNumbers", "spec.ttlSecurity", "spec.ebgpMultihopTTL", "spec.reachableBy", "spec.filters[0]"}},
		{"keepalive against the default hold time", peer("  peerIP: 192.0.2.1\n  asNumber: 1\n  keepaliveTime: 90s\n"), []string{"spec.keepaliveTime"}},
		{"keepalive under the default hold time", peer("  peerIP: 192.0.2.1\n  asNumber: 1\n  keepaliveTime: 60s\n"), nil},
		{"fractional timers", peer("  peerIP: 192.0.2.1\n  asNumber: 1\n  keepaliveTime: 3.5s\n  holdTime: 3.9s\n"), []string{"spec.keepaliveTime", "spec.holdTime"}},
		{"restart time BGP can carry", peer("  peerIP: 192.0.2.1\n  asNumber: 1\n  maxRestartTime: 4095s\n"), nil},
		{"restart time over 12 bits", peer("  peerIP: 192.0.2.1\n  asNumber: 1\n  maxRestartTime: 2h\n"), []string{"spec.maxRestartTime"}},
		{"ignored interfaces", conf("default", "  ignoredInterfaces: [eth0, 'veth*', 'eth0; rm', '']\n"), []string{"spec.ignoredInterfaces[2]", "spec.ignoredInterfaces[3]"}},
		{"mesh restart time over 12 bits", conf("default", "  nodeMeshMaxRestartTime: 4096s\n"), []string{"spec.nodeMeshMaxRestartTime"}},
		{"keepalive under a second", peer("  peerIP: 192.0.2.1\n  asNumber: 1\n  keepaliveTime: 500ms\n"), []string{"spec.keepaliveTime"}},
		{"password needs a source", peer("  peerIP: 192.0.2.1\n  asNumber: 1\n  password: {}\n"), []string{"spec.password"}},
		{"service addresses", conf("default", "  serviceExternalIPs: [{cidr: 198.19.5.5}, {cidr: 198.19.6.0/24}]\n  serviceLoadBalancerIPs: [{cidr: '198.19.7.0/33'}, {cidr: 'fe80::1%eth0'}]\n"),
			[]string{"spec.serviceLoadBalancerIPs[0].cidr", "spec.serviceLoadBalancerIPs[1].cidr"}},
		{"default config", conf("default", "  asNumber: 64512\n  nodeToNodeMeshEnabled: false\n  listenPort: 1179\n  serviceClusterIPs: [{cidr: 198.19.0.0/16}]\n  communities: [{name: big, value: '64512:300:100'}]\n  prefixAdvertisements: [{cidr: 198.19.0.0/16, communities: [big, '64512:120']}]\n"), nil},
		{"node config", conf("node.host-1", "  listenPort: 1179\n  logSeverityScreen: Debug\n"), nil},
		{"node config with cluster-wide fields", conf("node.host-1", "  asNumber: 1\n  nodeToNodeMeshEnabled: true\n  serviceClusterIPs: [{cidr: 198.19.0.0/16}]\n"),
			[]string{"spec.nodeToNodeMeshEnabled", "spec.asNumber", "spec.serviceClusterIPs"}},
		{"bad config name", conf("mine", "  listenPort: 179\n"), []string{"metadata.name"}},
		{"bad config values", conf("default", "  logSeverityScreen: Loud\n  asNumber: 0\n  listenPort: 70000\n  serviceExternalIPs: [{cidr: x}]\n  communities: [{name: c, value: '70000:1'}]\n  prefixAdvertisements: [{cidr: 198.19.0.0/16, communities: [nope]}]\n  bindMode: All\n"),
			[]string{"spec.logSeverityScreen", "spec.asNumber", "spec.listenPort", "spec.serviceExternalIPs[0].cidr", "spec.communities[0].value", "spec.prefixAdvertisements[0].communities[0]", "spec.bindMode"}},
	})
}

func TestBGPConfigDefaults(t *testing.T) {
	r := decodeOne(t, hdr+"kind: BGPConfiguration\nmetadata: {name: default}\n")
	SetDefaults(r)
	s := r.(*BGPConfiguration).Spec
	if s.NodeToNodeMeshEnabled == nil || !*s.NodeToNodeMeshEnabled || s.ASNumber == nil || *s.ASNumber != 64512 || s.ListenPort != 179 {
		t.Errorf("default BGPConfiguration defaults: %+v", s)
	}
	r = decodeOne(t, hdr+"kind: BGPConfiguration\nmetadata: {name: node.host-1}\n")
	SetDefaults(r)
	if diff := cmp.Diff(BGPConfigurationSpec{}, r.(*BGPConfiguration).Spec); diff != "" {
		t.Errorf("a per-node BGPConfiguration must inherit, not get defaults (-want +got):\n%s", diff)
	}
	// Advertised CIDRs are stored as advertised, in every object: a bare address is one host,
	// host bits are cleared.
	for _, name := range []string{"default", "node.host-1"} {
		r = decodeOne(t, hdr+"kind: BGPConfiguration\nmetadata: {name: "+name+"}\nspec:\n"+
			"  serviceClusterIPs: [{cidr: 198.19.0.10/16}]\n  serviceExternalIPs: [{cidr: 198.19.5.5}, {cidr: '2001:db8::1'}]\n"+
			"  serviceLoadBalancerIPs: [{cidr: '2001:db8:0:1::7/64'}]\n  prefixAdvertisements: [{cidr: 198.19.0.1/16}]\n")
		SetDefaults(r)
		s = r.(*BGPConfiguration).Spec
		got := []string{s.ServiceClusterIPs[0].CIDR, s.ServiceExternalIPs[0].CIDR, s.ServiceExternalIPs[1].CIDR,
			s.ServiceLoadBalancerIPs[0].CIDR, s.PrefixAdvertisements[0].CIDR}
		want := []string{"198.19.0.0/16", "198.19.5.5/32", "2001:db8::1/128", "2001:db8:0:1::/64", "198.19.0.0/16"}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s: advertised CIDRs after defaults (-want +got):\n%s", name, diff)
		}
	}
}

func TestValidateFelixConfiguration(t *testing.T) {
	fc := func(name, spec string) string {
		return hdr + "kind: FelixConfiguration\nmetadata: {name: " + name + "}\nspec:\n" + spec
	}
	runValidationCases(t, []validationCase{
		{"valid", fc("default", "  logSeverityScreen: Info\n  iptablesBackend: NFT\n  defaultEndpointToHostAction: Return\n  failsafeInboundHostPorts: [{protocol: tcp, port: 22}, {protocol: UDP, port: 68, net: 192.0.2.0/24}]\n  healthPort: 9099\n  prometheusMetricsEnabled: true\n  iptablesRefreshInterval: 90s\n  ipipEnabled: false\n  bpfEnabled: false\n  floatingIPs: Disabled\n  interfaceExclude: 'kube-ipvs0,/^veth.*/'\n"), nil},
		{"node", fc("node.host-1", "  logSeverityScreen: Debug\n"), nil},
		{"refused features", fc("default", "  ipipEnabled: true\n  vxlanEnabled: true\n  wireguardEnabled: true\n  bpfEnabled: true\n  floatingIPs: Enabled\n  interfacePrefix: cali\n"),
			[]string{"spec.interfacePrefix", "spec.ipipEnabled", "spec.vxlanEnabled", "spec.wireguardEnabled", "spec.bpfEnabled", "spec.floatingIPs"}},
		{"bad values", fc("default", "  iptablesBackend: nft\n  failsafeOutboundHostPorts: [{protocol: ICMP, port: 0}]\n  healthPort: 0\n  routeRefreshInterval: -1s\n  interfaceExclude: '/[/,eth\"0'\n"),
			[]string{"spec.routeRefreshInterval", "spec.iptablesBackend", "spec.interfaceExclude", "spec.interfaceExclude", "spec.failsafeOutboundHostPorts[0].protocol", "spec.failsafeOutboundHostPorts[0].port", "spec.healthPort"}},
		{"refresh below the floor", fc("default", "  iptablesRefreshInterval: 10ms\n  ipsetsRefreshInterval: 999ms\n  routeRefreshInterval: 0s\n"),
			[]string{"spec.iptablesRefreshInterval", "spec.ipsetsRefreshInterval"}},
		{"refresh at the floor", fc("node.host-1", "  iptablesRefreshInterval: 1s\n"), nil},
		{"mark mask in hex as Calico writes it", fc("default", "  iptablesMarkMask: 0xff000000\n"), nil},
		{"mark mask of two bits", fc("node.host-1", "  iptablesMarkMask: 3\n"), nil},
		{"mark mask of one bit", fc("default", "  iptablesMarkMask: 0x100000\n"), []string{"spec.iptablesMarkMask"}},
		{"mark mask of none", fc("node.host-1", "  iptablesMarkMask: 0\n"), []string{"spec.iptablesMarkMask"}},
		{"listen addresses", fc("default", "  healthHost: '::'\n  healthPort: 1\n  prometheusMetricsHost: Node-1.example.com\n  prometheusMetricsPort: 65535\n"), nil},
		{"listen addresses node", fc("node.host-1", "  healthHost: 0.0.0.0\n  prometheusMetricsHost: '2001:db8::1'\n"), nil},
		{"listen port out of range", fc("default", "  healthPort: 65536\n  prometheusMetricsPort: -1\n"),
			[]string{"spec.healthPort", "spec.prometheusMetricsPort"}},
		{"listen host with zone or port", fc("default", "  healthHost: 'fe80::1%eth0'\n  prometheusMetricsHost: 'localhost:9091'\n"),
			[]string{"spec.healthHost", "spec.prometheusMetricsHost"}},
		{"listen host empty label", fc("default", "  healthHost: a..b\n  prometheusMetricsHost: a.-b\n"),
			[]string{"spec.healthHost", "spec.prometheusMetricsHost"}},
		{"listen host label too long", fc("node.host-1", "  healthHost: "+strings.Repeat("a", 64)+".example\n  prometheusMetricsHost: '[::1]'\n"),
			[]string{"spec.healthHost", "spec.prometheusMetricsHost"}},
	})
}

func TestFelixConfigDefaults(t *testing.T) {
	r := decodeOne(t, hdr+"kind: FelixConfiguration\nmetadata: {name: default}\nspec:\n  failsafeOutboundHostPorts: []\n")
	SetDefaults(r)
	s := r.(*FelixConfiguration).Spec
	if s.FailsafeInboundHostPorts == nil {
		t.Fatal("inbound failsafe ports not defaulted")
	}
	var in []string
	for _, p := range *s.FailsafeInboundHostPorts {
		in = append(in, p.Protocol+":"+Port{MinPort: p.Port, MaxPort: p.Port}.String())
	}
	if diff := cmp.Diff([]string{"TCP:22", "UDP:68", "TCP:179", "TCP:2379", "TCP:2380", "TCP:6443"}, in); diff != "" {
		t.Errorf("inbound failsafe (-want +got):\n%s", diff)
	}
	// An explicit empty list means "no failsafe ports" and must survive defaulting.
	if s.FailsafeOutboundHostPorts == nil || len(*s.FailsafeOutboundHostPorts) != 0 {
		t.Errorf("explicit empty outbound list was replaced: %v", s.FailsafeOutboundHostPorts)
	}
}

func TestValidateUpdate(t *testing.T) {
	mk := func(cidr string, bs int) *IPPool {
		p := &IPPool{Metadata: ObjectMeta{Name: "p"}, Spec: IPPoolSpec{CIDR: cidr, BlockSize: bs}}
		SetDefaults(p)
		return p
	}
	tests := []struct {
		old, updated *IPPool
		want         []string
	}{
		{mk("198.18.0.0/16", 0), mk("198.18.0.0/16", 26), nil},
		{mk("198.18.0.0/16", 0), func() *IPPool { p := mk("198.18.0.0/16", 0); p.Spec.Disabled = true; return p }(), nil},
		{mk("198.18.0.0/16", 0), mk("198.18.0.0/15", 0), []string{"spec.cidr"}},
		{mk("198.18.0.0/16", 0), mk("198.18.0.0/16", 28), []string{"spec.blockSize"}},
		{mk("198.18.0.0/16", 0), mk("198.19.0.0/16", 24), []string{"spec.cidr", "spec.blockSize"}},
	}
	for _, tt := range tests {
		var got []string
		if err := ValidateUpdate(tt.old, tt.updated); err != nil {
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("ValidateUpdate returned %T", err)
			}
			for _, f := range ve.Fields {
				got = append(got, f.Path)
			}
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("ValidateUpdate(%s/%d -> %s/%d) (-want +got):\n%s", tt.old.Spec.CIDR, tt.old.Spec.BlockSize,
				tt.updated.Spec.CIDR, tt.updated.Spec.BlockSize, diff)
		}
	}
	if err := ValidateUpdate(&Node{}, &Node{}); err != nil {
		t.Errorf("ValidateUpdate of nodes: %v", err)
	}
}
