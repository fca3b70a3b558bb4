package api

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// calicoExamples are the sample manifests of Calico's v3 resource reference, copied unchanged
// (the HostEndpoint one with its placeholders filled in). want lists the fields Terrace refuses,
// each for a feature it does not have; everything else must apply as written.
var calicoExamples = []struct {
	name     string
	manifest string
	want     []string
}{
	{"IPPool (ipipMode CrossSubnet is refused)", `apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: my.ippool-1
spec:
  cidr: 10.1.0.0/16
  ipipMode: CrossSubnet
  natOutgoing: true
  disabled: false
  nodeSelector: all()
  allowedUses:
    - Workload
    - Tunnel
  assignmentMode: Automatic
`, []string{"spec.ipipMode"}},
	{"NetworkPolicy", `apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata:
  name: allow-tcp-6379
  namespace: production
spec:
  selector: role == 'database'
  types:
    - Ingress
    - Egress
  ingress:
    - action: Allow
      metadata:
        annotations:
          from: frontend
          to: database
      protocol: TCP
      source:
        selector: role == 'frontend'
      destination:
        ports:
          - 6379
  egress:
    - action: Allow
`, nil},
	{"GlobalNetworkPolicy", `apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata:
  name: allow-tcp-6379
spec:
  selector: role == 'database'
  types:
    - Ingress
    - Egress
  ingress:
    - action: Allow
      metadata:
        annotations:
          from: frontend
          to: database
      protocol: TCP
      source:
        selector: role == 'frontend'
      destination:
        ports:
          - 6379
  egress:
    - action: Allow
`, nil},
	{"BGPConfiguration", `apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata:
  name: default
spec:
  logSeverityScreen: Info
  nodeToNodeMeshEnabled: true
  nodeMeshMaxRestartTime: 120s
  asNumber: 63400
  serviceClusterIPs:
    - cidr: 10.96.0.0/12
  serviceExternalIPs:
    - cidr: 104.244.42.129/32
    - cidr: 172.217.3.0/24
  listenPort: 178
  bindMode: NodeIP
  communities:
    - name: bgp-large-community
      value: 63400:300:100
  prefixAdvertisements:
    - cidr: 172.218.4.0/26
      communities:
        - bgp-large-community
        - 63400:120
`, nil},
	{"BGPPeer", `apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata:
  name: some.name
spec:
  node: rack1-host1
  peerIP: 192.168.1.1
  asNumber: 63400
`, nil},
	{"BGPFilter", `apiVersion: projectcalico.org/v3
kind: BGPFilter
metadata:
  name: my-filter
spec:
  exportV4:
    - action: Accept
      matchOperator: In
      cidr: 77.0.0.0/16
    - action: Reject
      source: RemotePeers
  importV4:
    - action: Reject
      matchOperator: NotIn
      cidr: 44.0.0.0/16
  exportV6:
    - action: Reject
      source: RemotePeers
  importV6:
    - action: Accept
      matchOperator: Equal
      cidr: 5000::0/64
`, nil},
	{"BGPFilter (prefixLength)", `apiVersion: projectcalico.org/v3
kind: BGPFilter
metadata:
  name: my-filter
spec:
  exportV4:
    - action: Accept
      matchOperator: In
      cidr: 77.0.0.0/16
      prefixLength:
        min: 24
        max: 28
`, nil},
	{"Node (the IPIP tunnel address is refused)", `apiVersion: projectcalico.org/v3
kind: Node
metadata:
  name: node-hostname
spec:
  bgp:
    asNumber: 64512
    ipv4Address: 10.244.0.1/24
    ipv6Address: 2001:db8:85a3::8a2e:370:7334/120
    ipv4IPIPTunnelAddr: 192.168.0.1
`, []string{"spec.bgp.ipv4IPIPTunnelAddr"}},
	{"WorkloadEndpoint (repeats endpoint: eth0)", `apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata:
  name: node1-k8s-my--nginx--b1337a-eth0
  namespace: default
  labels:
    app: frontend
    projectcalico.org/namespace: default
    projectcalico.org/orchestrator: k8s
spec:
  node: node1
  orchestrator: k8s
  endpoint: eth0
  containerID: 1337495556942031415926535
  pod: my-nginx-b1337a
  endpoint: eth0
  interfaceName: cali0ef24ba
  mac: ca:fe:1d:52:bb:e9
  ipNetworks:
    - 192.168.0.0/32
  profiles:
    - profile1
  ports:
    - name: some-port
      port: 1234
      protocol: TCP
    - name: another-port
      port: 5432
      protocol: UDP
`, nil},
	{"HostEndpoint (list form)", `- apiVersion: projectcalico.org/v3
  kind: HostEndpoint
  metadata:
    name: my-host-eth0
    labels:
      role: webserver
      environment: production
  spec:
    interfaceName: eth0
    node: my-host
    profiles: []
    expectedIPs: ["10.0.0.1"]
`, nil},
	{"GlobalNetworkSet", `apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata:
  name: a-name-for-the-set
  labels:
    role: external-database
spec:
  nets:
  - 198.51.100.0/28
  - 203.0.113.0/24
`, nil},
	{"NetworkSet", `apiVersion: projectcalico.org/v3
kind: NetworkSet
metadata:
  name: external-database
  namespace: staging
  labels:
    role: db
spec:
  nets:
  - 198.51.100.0/28
  - 203.0.113.0/24
`, nil},
	{"FelixConfiguration", `apiVersion: projectcalico.org/v3
kind: FelixConfiguration
metadata:
  name: default
spec:
  ipv6Support: false
  ipipMTU: 1400
  chainInsertMode: Append
`, nil},
	{"IPAMConfiguration", `apiVersion: projectcalico.org/v3
kind: IPAMConfiguration
metadata:
  name: default
spec:
  strictAffinity: false
  maxBlocksPerHost: 4
`, nil},
}

func TestCalicoExamples(t *testing.T) {
	for _, ex := range calicoExamples {
		t.Run(ex.name, func(t *testing.T) {
			got := fieldPaths(t, decodeOne(t, ex.manifest))
			if diff := cmp.Diff(ex.want, got); diff != "" {
				t.Errorf("field errors (-want +got):\n%s", diff)
			}
		})
	}
}

// TestRoundTrip checks (empty and absent lists are equal: JSON omits both) Decode → SetDefaults → Marshal → Unmarshal gives back the same resource,
// and that defaulting is idempotent (so an unchanged re-apply compares equal), for every example.
func TestRoundTrip(t *testing.T) {
	for _, ex := range calicoExamples {
		t.Run(ex.name, func(t *testing.T) {
			r := decodeOne(t, ex.manifest)
			SetDefaults(r)
			b, err := Marshal(r)
			if err != nil {
				t.Fatalf("Marshal: %v", err)
			}
			back, err := Unmarshal(b)
			if err != nil {
				t.Fatalf("Unmarshal(%s): %v", b, err)
			}
			if diff := cmp.Diff(r, back, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("round trip (-decoded +unmarshaled):\n%s", diff)
			}
			SetDefaults(back)
			if diff := cmp.Diff(r, back, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("SetDefaults is not idempotent (-once +twice):\n%s", diff)
			}
			// The stored JSON decodes strictly as a manifest too.
			docs, err := Decode(b)
			if err != nil || len(docs) != 1 || docs[0].Err != nil {
				t.Fatalf("Decode(Marshal(r)): %v %+v", err, docs)
			}
			if diff := cmp.Diff(r, docs[0].Resource, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("Decode of stored JSON (-want +got):\n%s", diff)
			}
		})
	}
}
