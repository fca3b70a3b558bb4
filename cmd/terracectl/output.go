package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"

	"sigs.k8s.io/yaml"

	"github.com/terracenet/terrace/datastore/api"
)

// Output formats of -o.
const (
	outTable = ""
	outWide  = "wide"
	outYAML  = "yaml"
	outJSON  = "json"
	outName  = "name"
)

func checkOutput(o string) error {
	switch o {
	case outTable, outWide, outYAML, outJSON, outName:
		return nil
	}
	return usageErrorf("unknown output format %q: want yaml, json, wide or name", o)
}

// printOptions say how a list of resources is shown.
type printOptions struct {
	format        string
	single        bool // asked for one resource by name: yaml/json print the object, not a List
	showNamespace bool // -A: namespaced kinds get a NAMESPACE column
}

// printResources writes rs in the requested format. Lists in json/yaml are always
// {"kind":"List","items":[...]} so scripts never have to guess the shape.
func printResources(w io.Writer, rs []api.Resource, o printOptions) error {
	switch o.format {
	case outJSON, outYAML:
		raws := make([]json.RawMessage, 0, len(rs))
		for _, r := range rs {
			b, err := api.Marshal(r)
			if err != nil {
				return fmt.Errorf("encode resource: %w", err)
			}
			raws = append(raws, b)
		}
		var doc []byte
		if o.single && len(raws) == 1 {
			doc = raws[0]
		} else {
			var err error
			doc, err = json.Marshal(struct {
				Kind  string            `json:"kind"`
				Items []json.RawMessage `json:"items"`
			}{"List", raws})
			if err != nil {
				return fmt.Errorf("encode list: %w", err)
			}
		}
		if o.format == outYAML {
			y, err := yaml.JSONToYAML(doc)
			if err != nil {
				return fmt.Errorf("encode YAML: %w", err)
			}
			_, err = w.Write(y)
			return err
		}
		var buf bytes.Buffer
		if err := json.Indent(&buf, doc, "", "  "); err != nil {
			return fmt.Errorf("indent JSON: %w", err)
		}
		buf.WriteByte('\n')
		_, err := w.Write(buf.Bytes())
		return err
	case outName:
		for _, r := range rs {
			if _, err := fmt.Fprintln(w, refOf(r)); err != nil {
				return err
			}
		}
		return nil
	}
	return printTable(w, rs, o)
}

// printTable groups resources by kind (a table per kind, in registry order) with the columns an
// operator of that kind wants.
func printTable(w io.Writer, rs []api.Resource, o printOptions) error {
	groups := map[string][]api.Resource{}
	for _, r := range rs {
		k := kindName(r)
		groups[k] = append(groups[k], r)
	}
	tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	first := true
	for _, info := range api.Kinds() {
		items := groups[info.Kind]
		if len(items) == 0 {
			continue
		}
		if !first {
			fmt.Fprintln(tw)
		}
		first = false
		cols := columnsFor(info.Kind, o.format == outWide)
		var hdr []string
		if info.Namespaced && o.showNamespace {
			hdr = append(hdr, "NAMESPACE")
		}
		hdr = append(hdr, "NAME")
		for _, c := range cols {
			hdr = append(hdr, c.header)
		}
		fmt.Fprintln(tw, strings.Join(hdr, "\t"))
		for _, r := range items {
			m, err := toMap(r)
			if err != nil {
				return err
			}
			var row []string
			meta := r.GetObjectMeta()
			if info.Namespaced && o.showNamespace {
				row = append(row, meta.Namespace)
			}
			row = append(row, meta.Name)
			for _, c := range cols {
				v := lookup(m, c.path)
				if l, ok := v.([]any); ok && c.count {
					v = strconv.Itoa(len(l))
				}
				row = append(row, cell(v))
			}
			fmt.Fprintln(tw, strings.Join(row, "\t"))
		}
	}
	return tw.Flush()
}

// column is one table column: a header and a dotted JSON path into the resource.
type column struct {
	header string
	path   string
	wide   bool // only with -o wide
	count  bool // a list shown as its length (rules do not fit a cell; -o yaml shows them)
}

var kindColumns = map[string][]column{
	api.KindNode: {
		{header: "IPV4", path: "spec.bgp.ipv4Address"},
		{header: "IPV6", path: "spec.bgp.ipv6Address"},
		{header: "ASN", path: "spec.bgp.asNumber"},
		{header: "METHOD", path: "status.autodetection.method"},
		{header: "INTERFACE", path: "status.autodetection.interface", wide: true},
		{header: "RRCLUSTERID", path: "spec.bgp.routeReflectorClusterID", wide: true},
		{header: "LABELS", path: "metadata.labels", wide: true},
	},
	api.KindIPPool: {
		{header: "CIDR", path: "spec.cidr"},
		{header: "BLOCKSIZE", path: "spec.blockSize"},
		{header: "NAT", path: "spec.natOutgoing"},
		{header: "DISABLED", path: "spec.disabled"},
		{header: "SELECTOR", path: "spec.nodeSelector"},
		{header: "DISABLEBGPEXPORT", path: "spec.disableBGPExport", wide: true},
		{header: "ALLOWEDUSES", path: "spec.allowedUses", wide: true},
		{header: "IPIP", path: "spec.ipipMode", wide: true},
		{header: "VXLAN", path: "spec.vxlanMode", wide: true},
	},
	api.KindIPAMConfiguration: {
		{header: "STRICTAFFINITY", path: "spec.strictAffinity"},
		{header: "MAXBLOCKSPERHOST", path: "spec.maxBlocksPerHost"},
	},
	api.KindBGPConfiguration: {
		{header: "ASN", path: "spec.asNumber"},
		{header: "MESH", path: "spec.nodeToNodeMeshEnabled"},
		{header: "LISTENPORT", path: "spec.listenPort"},
		{header: "LOGSEVERITY", path: "spec.logSeverityScreen", wide: true},
		{header: "SERVICECLUSTERIPS", path: "spec.serviceClusterIPs", wide: true},
	},
	api.KindBGPFilter: {
		{header: "EXPORTV4-RULES", path: "spec.exportV4", count: true},
		{header: "IMPORTV4-RULES", path: "spec.importV4", count: true},
		{header: "EXPORTV6-RULES", path: "spec.exportV6", count: true},
		{header: "IMPORTV6-RULES", path: "spec.importV6", count: true},
	},
	api.KindBGPPeer: {
		{header: "PEERIP", path: "spec.peerIP"},
		{header: "ASN", path: "spec.asNumber"},
		{header: "NODE", path: "spec.node"},
		{header: "NODESELECTOR", path: "spec.nodeSelector"},
		{header: "PEERSELECTOR", path: "spec.peerSelector", wide: true},
		{header: "SOURCEADDRESS", path: "spec.sourceAddress", wide: true},
	},
	api.KindFelixConfiguration: {
		{header: "LOGSEVERITY", path: "spec.logSeverityScreen"},
		{header: "IPV6", path: "spec.ipv6Support"},
		{header: "ENDPOINTTOHOST", path: "spec.defaultEndpointToHostAction", wide: true},
		{header: "IPTABLESBACKEND", path: "spec.iptablesBackend", wide: true},
	},
	api.KindWorkloadEndpoint: {
		{header: "WORKLOAD", path: "spec.workload"},
		{header: "NODE", path: "spec.node"},
		{header: "NETWORKS", path: "spec.ipNetworks"},
		{header: "INTERFACE", path: "spec.interfaceName"},
		{header: "PROFILES", path: "spec.profiles", wide: true},
		{header: "MAC", path: "spec.mac", wide: true},
		{header: "LABELS", path: "metadata.labels", wide: true},
	},
	api.KindHostEndpoint: {
		{header: "NODE", path: "spec.node"},
		{header: "INTERFACE", path: "spec.interfaceName"},
		{header: "EXPECTEDIPS", path: "spec.expectedIPs"},
		{header: "PROFILES", path: "spec.profiles", wide: true},
		{header: "LABELS", path: "metadata.labels", wide: true},
	},
	api.KindNetworkPolicy: {
		{header: "ORDER", path: "spec.order"},
		{header: "SELECTOR", path: "spec.selector"},
		{header: "TYPES", path: "spec.types"},
		{header: "TIER", path: "spec.tier", wide: true},
	},
	api.KindGlobalNetworkPolicy: {
		{header: "ORDER", path: "spec.order"},
		{header: "SELECTOR", path: "spec.selector"},
		{header: "TYPES", path: "spec.types"},
		{header: "TIER", path: "spec.tier", wide: true},
		{header: "APPLYONFORWARD", path: "spec.applyOnForward", wide: true},
		{header: "PREDNAT", path: "spec.preDNAT", wide: true},
	},
	api.KindNetworkSet: {
		{header: "NETS", path: "spec.nets"},
		{header: "LABELS", path: "metadata.labels", wide: true},
	},
	api.KindGlobalNetworkSet: {
		{header: "NETS", path: "spec.nets"},
		{header: "LABELS", path: "metadata.labels", wide: true},
	},
}

func columnsFor(kind string, wide bool) []column {
	var out []column
	for _, c := range kindColumns[kind] {
		if !c.wide || wide {
			out = append(out, c)
		}
	}
	return out
}

// toMap goes through the stored JSON form so that columns name fields exactly as users write them.
func toMap(r api.Resource) (map[string]any, error) {
	b, err := api.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("encode resource: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("decode resource: %w", err)
	}
	return m, nil
}

func lookup(m map[string]any, path string) any {
	var cur any = m
	for _, p := range strings.Split(path, ".") {
		mm, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = mm[p]
	}
	return cur
}

// cell renders a value for a table: "-" for nothing, lists comma-joined, maps as sorted k=v.
func cell(v any) string {
	switch x := v.(type) {
	case nil:
		return "-"
	case string:
		if x == "" {
			return "-"
		}
		return x
	case []any:
		if len(x) == 0 {
			return "-"
		}
		parts := make([]string, len(x))
		for i, e := range x {
			parts[i] = cell(e)
		}
		return strings.Join(parts, ",")
	case map[string]any:
		if len(x) == 0 {
			return "-"
		}
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		parts := make([]string, len(keys))
		for i, k := range keys {
			parts[i] = k + "=" + cell(x[k])
		}
		return strings.Join(parts, ",")
	}
	return fmt.Sprint(v)
}

// kindName is the Kind of a resource, from its Go type.
func kindName(r api.Resource) string {
	if info, err := api.KindOf(r); err == nil {
		return info.Kind
	}
	return r.GetTypeMeta().Kind
}

// refOf is how one resource is named in messages and -o name: "ippool/pool-1",
// "networkpolicy/ns1/allow-web".
func refOf(r api.Resource) string {
	m := r.GetObjectMeta()
	k := strings.ToLower(kindName(r))
	if m.Namespace != "" {
		return k + "/" + m.Namespace + "/" + m.Name
	}
	return k + "/" + m.Name
}
