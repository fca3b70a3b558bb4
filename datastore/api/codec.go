package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	yaml3 "go.yaml.in/yaml/v3"
	"sigs.k8s.io/yaml"
)

// Document is one resource found in a manifest. Index counts documents from 0 in input order (list
// items count individually); Line is the 1-based line where the document starts. Err is set, and
// Resource nil, when this document cannot be decoded; other documents are unaffected.
type Document struct {
	Index    int
	Line     int
	Resource Resource
	Err      error
}

// Decode splits a manifest into resources: multi-document YAML (separated by "---" lines), or JSON
// (one object, a stream of objects, or an array); in either form a document may be a "kind: List"
// whose "items" are the resources. Decoding is strict: unknown fields, a key repeated with a
// different value, a missing or foreign apiVersion and unknown kinds are errors of that document.
// The returned error is only for input that cannot be split into documents at all.
func Decode(data []byte) ([]Document, error) {
	docs, _, err := DecodeManifest(data)
	return docs, err
}

// DecodeManifest is Decode that also counts the "kind: List" documents it expanded, so that a
// caller can tell a List with no items (what `get -o yaml` prints when nothing matches: zero
// resources, on purpose) from input holding no document at all (most likely a mistake).
func DecodeManifest(data []byte) (docs []Document, lists int, err error) {
	if !utf8.Valid(data) {
		return nil, 0, errors.New("decode manifest: input is not UTF-8 text")
	}
	add := func(line int, r Resource, err error) {
		docs = append(docs, Document{Index: len(docs), Line: line, Resource: r, Err: err})
	}
	trimmed := bytes.TrimSpace(data)
	var chunks []chunk
	var jsonErr error
	jsonInput := false
	if len(trimmed) > 0 && (trimmed[0] == '{' || trimmed[0] == '[') {
		// JSON, unless its first value does not even parse as JSON: then it may be YAML in flow
		// style ("{apiVersion: …, kind: IPPool, …}"), which calicoctl takes too.
		chunks, jsonErr = splitJSON(data)
		jsonInput = jsonErr == nil
	}
	if jsonInput {
		for _, c := range chunks {
			if c.err != nil {
				add(c.line, nil, c.err)
				continue
			}
			items, isList, err := expandJSONList(c.json)
			if isList {
				lists++
			}
			if err != nil {
				add(c.line, nil, err)
				continue
			}
			for _, item := range items {
				r, err := decodeJSONItem(item)
				add(c.line, r, err)
			}
		}
		return docs, lists, nil
	}
	for _, c := range splitYAML(data) {
		items, isList := yamlItems(c)
		if isList {
			lists++
		}
		for _, it := range items {
			if it.err != nil {
				if jsonErr != nil && strings.HasPrefix(it.err.Error(), "parse YAML") {
					// Neither JSON nor YAML: it looked like JSON, so say what JSON found.
					return nil, 0, jsonErr
				}
				add(it.line, nil, it.err)
				continue
			}
			r, err := decodeYAMLItem(it.node, it.text)
			add(it.line, r, err)
		}
	}
	return docs, lists, nil
}

type chunk struct {
	start int             // 1-based line of the chunk's first line
	line  int             // 1-based line of its first content line
	text  []byte          // YAML text, or
	json  json.RawMessage // an already split JSON value
	err   error
}

// splitYAML cuts at lines that are "---" (optionally followed by a space and anything) or "...",
// and drops chunks holding only blank lines and comments. Splitting by lines rather than with a
// YAML stream decoder keeps one broken document from hiding the ones after it.
func splitYAML(data []byte) []chunk {
	var out []chunk
	var cur []byte
	start, firstContent := 1, 0
	flush := func() {
		if firstContent > 0 {
			out = append(out, chunk{start: start, line: firstContent, text: cur})
		}
		cur, firstContent = nil, 0
	}
	for i, l := range bytes.SplitAfter(data, []byte("\n")) {
		t := bytes.TrimRight(l, "\r\n")
		if bytes.Equal(t, []byte("---")) || bytes.HasPrefix(t, []byte("--- ")) || bytes.Equal(t, []byte("...")) {
			flush()
			start = i + 2
			continue
		}
		cur = append(cur, l...)
		s := bytes.TrimSpace(t)
		if firstContent == 0 && len(s) > 0 && s[0] != '#' {
			firstContent = i + 1
		}
	}
	flush()
	return out
}

type yamlItem struct {
	line int
	node *yaml3.Node
	text []byte
	err  error
}

var yamlLineRE = regexp.MustCompile(`line (\d+)`)

// yamlItems parses one YAML chunk and returns its resources' YAML text: the chunk itself, the
// elements of a top-level sequence, or the items of a "kind: List".
func yamlItems(c chunk) (items []yamlItem, isList bool) {
	abs := func(rel int) int { return c.start + rel - 1 }
	var root yaml3.Node
	if err := yaml3.Unmarshal(c.text, &root); err != nil {
		// Make the parser's chunk-relative line numbers absolute.
		msg := yamlLineRE.ReplaceAllStringFunc(err.Error(), func(m string) string {
			n, _ := strconv.Atoi(strings.TrimPrefix(m, "line "))
			return "line " + strconv.Itoa(abs(n))
		})
		return []yamlItem{{line: c.line, err: fmt.Errorf("parse YAML: %s", strings.TrimPrefix(msg, "yaml: "))}}, false
	}
	if len(root.Content) == 0 {
		return nil, false
	}
	n := root.Content[0]
	if n.Kind == yaml3.ScalarNode && n.Tag == "!!null" {
		return nil, false
	}
	if err := checkDuplicateKeys(n, abs); err != nil {
		return []yamlItem{{line: c.line, err: err}}, false
	}
	nodes := []*yaml3.Node{n}
	switch n.Kind {
	case yaml3.SequenceNode:
		nodes = n.Content
	case yaml3.MappingNode:
		if v := mappingValue(n, "kind"); v != nil && IsListKind(v.Value) {
			isList = true
			list := mappingValue(n, "items")
			switch {
			case list != nil && list.Kind == yaml3.SequenceNode:
				nodes = list.Content
			case list != nil && list.Tag == "!!null":
				nodes = nil // an empty list, as calicoctl prints one
			default:
				// A mis-indented "items" would otherwise apply nothing and say nothing.
				return []yamlItem{{line: c.line, err: fmt.Errorf("decode %s: items must be a sequence of resources", v.Value)}}, true
			}
		}
	}
	for _, item := range nodes {
		it := yamlItem{line: abs(item.Line)}
		if item.Kind != yaml3.MappingNode {
			it.err = errors.New("decode document: want a mapping with apiVersion, kind, metadata and spec")
		} else if b, err := yaml3.Marshal(quoteStrings(item)); err != nil {
			it.err = fmt.Errorf("decode document: %w", err)
		} else {
			it.node, it.text = item, b
		}
		items = append(items, it)
	}
	return items, isList
}

// quoteStrings marks every scalar that YAML 1.2 reads as a string as quoted, so that the YAML 1.1
// converter behind sigs.k8s.io/yaml does not turn `name: n` or `on: x` into booleans.
func quoteStrings(n *yaml3.Node) *yaml3.Node {
	if n.Kind == yaml3.ScalarNode && n.ShortTag() == "!!str" && n.Style&(yaml3.LiteralStyle|yaml3.FoldedStyle) == 0 {
		n.Style = yaml3.DoubleQuotedStyle
	}
	for _, c := range n.Content {
		quoteStrings(c)
	}
	return n
}

func mappingValue(m *yaml3.Node, key string) *yaml3.Node {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

// checkDuplicateKeys refuses a key given twice with different values. The same value twice is
// accepted because Calico's own WorkloadEndpoint sample repeats "endpoint: eth0".
func checkDuplicateKeys(n *yaml3.Node, abs func(int) int) error {
	if n.Kind == yaml3.MappingNode {
		seen := map[string]int{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i].Value
			if j, ok := seen[k]; ok && !sameNode(n.Content[j+1], n.Content[i+1]) {
				return fmt.Errorf("parse YAML: key %q at line %d repeats the one at line %d with a different value",
					k, abs(n.Content[i].Line), abs(n.Content[j].Line))
			}
			seen[k] = i
		}
	}
	for _, c := range n.Content {
		if err := checkDuplicateKeys(c, abs); err != nil {
			return err
		}
	}
	return nil
}

func sameNode(a, b *yaml3.Node) bool {
	if a.Kind != b.Kind || a.Value != b.Value || a.ShortTag() != b.ShortTag() || len(a.Content) != len(b.Content) {
		return false
	}
	for i := range a.Content {
		if !sameNode(a.Content[i], b.Content[i]) {
			return false
		}
	}
	return true
}

// splitJSON reads a stream of JSON values; arrays and Lists are expanded by expandJSONList.
func splitJSON(data []byte) ([]chunk, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	var out []chunk
	for {
		offset := dec.InputOffset()
		var raw json.RawMessage
		err := dec.Decode(&raw)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		line := 1 + bytes.Count(data[:offset], []byte("\n"))
		rest := data[offset:]
		line += bytes.Count(rest[:len(rest)-len(bytes.TrimLeft(rest, " \t\r\n"))], []byte("\n"))
		if err != nil {
			if len(out) == 0 {
				return nil, fmt.Errorf("parse JSON near line %d: %w", line, err)
			}
			// The values before the break are fine; the rest is one bad document.
			return append(out, chunk{line: line, err: fmt.Errorf("parse JSON: %w", err)}), nil
		}
		out = append(out, chunk{line: line, json: raw})
	}
}

// expandJSONList turns an array or a "kind: List" object into its items.
func expandJSONList(js []byte) (items []json.RawMessage, isList bool, err error) {
	js = bytes.TrimSpace(js)
	switch {
	case bytes.Equal(js, []byte("null")):
		return nil, false, nil
	case js[0] == '[':
		if err := json.Unmarshal(js, &items); err != nil {
			return nil, false, fmt.Errorf("decode array: %w", err)
		}
		return items, false, nil
	case js[0] == '{':
		var head struct {
			Kind string `json:"kind"`
		}
		if err := json.Unmarshal(js, &head); err == nil && IsListKind(head.Kind) {
			var list struct {
				Items *[]json.RawMessage `json:"items"`
			}
			if err := json.Unmarshal(js, &list); err != nil {
				return nil, true, fmt.Errorf("decode %s: items must be an array of resources: %w", head.Kind, err)
			}
			if list.Items == nil {
				return nil, true, nil // an empty list (items null or absent in JSON output)
			}
			return *list.Items, true, nil
		}
		return []json.RawMessage{js}, false, nil
	default:
		return nil, false, fmt.Errorf("decode document: want an object with apiVersion, kind, metadata and spec, got %.40s", js)
	}
}

type header struct {
	Kind       string `json:"kind"`
	APIVersion string `json:"apiVersion"`
	Metadata   struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
	} `json:"metadata"`
}

func readHeader(js []byte) (header, KindInfo, error) {
	var h header
	if err := json.Unmarshal(js, &h); err != nil {
		return h, KindInfo{}, fmt.Errorf("decode document header: want an object with apiVersion, kind, metadata and spec: %w", err)
	}
	if h.Kind == "" {
		return h, KindInfo{}, errors.New("decode document: kind is missing")
	}
	info, ok := kindByName(h.Kind)
	if !ok {
		return h, KindInfo{}, fmt.Errorf("decode document: unknown kind %q (known: %s)", h.Kind, kindNames())
	}
	return h, info, nil
}

func kindByName(kind string) (KindInfo, bool) {
	for _, k := range kinds {
		if k.Kind == kind {
			return k, true
		}
	}
	return KindInfo{}, false
}

func checkAPIVersion(h header) error {
	switch h.APIVersion {
	case GroupVersion, CalicoGroupVersion:
		return nil
	case "":
		return fmt.Errorf("decode %s: apiVersion is missing (want %s or %s)", describe(h), GroupVersion, CalicoGroupVersion)
	default:
		return fmt.Errorf("decode %s: apiVersion %q is not accepted (want %s or %s)", describe(h), h.APIVersion, GroupVersion, CalicoGroupVersion)
	}
}

func decodeJSONItem(js []byte) (Resource, error) {
	h, info, err := readHeader(js)
	if err != nil {
		return nil, err
	}
	if err := checkAPIVersion(h); err != nil {
		return nil, err
	}
	r := info.New()
	if err := checkDuplicateKeysJSON(js, ""); err != nil {
		return nil, fmt.Errorf("decode %s: %w", describe(h), err)
	}
	// Keys first, so an unknown field is reported with its path rather than by encoding/json.
	if err := checkExactKeysJSON(r, js); err != nil {
		return nil, fmt.Errorf("decode %s: %w", describe(h), err)
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	if err := dec.Decode(r); err != nil {
		return nil, fmt.Errorf("decode %s: %w", describe(h), err)
	}
	*r.GetTypeMeta() = tm(info.Kind)
	return r, nil
}

// decodeYAMLItem converts YAML to JSON guided by the target type (sigs.k8s.io/yaml), so that a
// scalar such as `containerID: 1337` lands in a string field as text, as it does for calicoctl.
// The header and the key-case check read the already parsed node to avoid parsing again.
func decodeYAMLItem(n *yaml3.Node, text []byte) (Resource, error) {
	var h header
	h.Kind = scalarAt(n, "kind")
	h.APIVersion = scalarAt(n, "apiVersion")
	if md := mappingValue(n, "metadata"); md != nil {
		h.Metadata.Name = scalarAt(md, "name")
		h.Metadata.Namespace = scalarAt(md, "namespace")
	}
	if h.Kind == "" {
		return nil, errors.New("decode document: kind is missing")
	}
	info, ok := kindByName(h.Kind)
	if !ok {
		return nil, fmt.Errorf("decode document: unknown kind %q (known: %s)", h.Kind, kindNames())
	}
	if err := checkAPIVersion(h); err != nil {
		return nil, err
	}
	r := info.New()
	// The typed decode runs first because it refuses alias bombs that nodeKeys would expand. Only
	// when it failed on an unknown field (so aliases were already within bounds) does the key walk
	// run, to name the field's path, which encoding/json does not.
	if err := yaml.Unmarshal(text, r, yaml.DisallowUnknownFields); err != nil {
		if strings.Contains(err.Error(), "unknown field") {
			if kerr := checkExactKeys(reflect.TypeOf(r), nodeKeys(n, 0), ""); kerr != nil {
				err = kerr
			}
		}
		return nil, fmt.Errorf("decode %s: %w", describe(h), innermost(err))
	}
	if err := checkExactKeys(reflect.TypeOf(r), nodeKeys(n, 0), ""); err != nil {
		return nil, fmt.Errorf("decode %s: %w", describe(h), err)
	}
	*r.GetTypeMeta() = tm(info.Kind)
	return r, nil
}

func scalarAt(m *yaml3.Node, key string) string {
	if m == nil || m.Kind != yaml3.MappingNode {
		return ""
	}
	if v := mappingValue(m, key); v != nil && v.Kind == yaml3.ScalarNode {
		return v.Value
	}
	return ""
}

// nodeKeys reduces a parsed YAML node to the shape checkExactKeys walks: objects and arrays,
// scalars as nil. The depth bound keeps alias cycles finite (the typed decode has already
// refused excessive aliasing by then).
func nodeKeys(n *yaml3.Node, depth int) any {
	if depth > 64 {
		return nil
	}
	switch n.Kind {
	case yaml3.AliasNode:
		return nodeKeys(n.Alias, depth+1)
	case yaml3.MappingNode:
		m := make(map[string]any, len(n.Content)/2)
		for i := 0; i+1 < len(n.Content); i += 2 {
			m[n.Content[i].Value] = nodeKeys(n.Content[i+1], depth+1)
		}
		return m
	case yaml3.SequenceNode:
		a := make([]any, len(n.Content))
		for i, c := range n.Content {
			a[i] = nodeKeys(c, depth+1)
		}
		return a
	}
	return nil
}

// innermost drops sigs.k8s.io/yaml's "error converting YAML to JSON" style wrappers, which say
// nothing to a user, and only those: the errors of Terrace's own decoders under them carry the
// hint ("want a string like \"90s\"").
func innermost(err error) error {
	for {
		msg := err.Error()
		if !strings.HasPrefix(msg, "error converting YAML to JSON") && !strings.HasPrefix(msg, "error unmarshaling JSON") && !strings.HasPrefix(msg, "while decoding JSON") {
			return err
		}
		u := errors.Unwrap(err)
		if u == nil {
			return err
		}
		err = u
	}
}

func describe(h header) string {
	switch {
	case h.Metadata.Namespace != "" && h.Metadata.Name != "":
		return fmt.Sprintf("%s %s/%s", h.Kind, h.Metadata.Namespace, h.Metadata.Name)
	case h.Metadata.Name != "":
		return fmt.Sprintf("%s %q", h.Kind, h.Metadata.Name)
	default:
		return h.Kind + " (unnamed)"
	}
}

// Marshal encodes a resource as stored in etcd: JSON with kind and apiVersion terrace.dev/v1 taken
// from its Go type. The resource itself is not modified.
func Marshal(r Resource) ([]byte, error) {
	if r == nil || reflect.ValueOf(r).IsNil() {
		return nil, errors.New("marshal resource: nil resource")
	}
	info, err := KindOf(r)
	if err != nil {
		return nil, fmt.Errorf("marshal resource: %w", err)
	}
	// Shallow copy so the caller's TypeMeta stays as it was.
	cp := reflect.New(reflect.TypeOf(r).Elem())
	cp.Elem().Set(reflect.ValueOf(r).Elem())
	c := cp.Interface().(Resource)
	*c.GetTypeMeta() = tm(info.Kind)
	b, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("marshal %s: %w", info.Kind, err)
	}
	return b, nil
}

// Unmarshal decodes one stored JSON object. Unlike Decode it tolerates unknown fields, so that
// data written by a newer Terrace can still be read; kind and apiVersion must still be known.
func Unmarshal(data []byte) (Resource, error) {
	h, info, err := readHeader(data)
	if err != nil {
		return nil, fmt.Errorf("unmarshal resource: %w", err)
	}
	if h.APIVersion != GroupVersion && h.APIVersion != CalicoGroupVersion {
		return nil, fmt.Errorf("unmarshal %s: apiVersion %q is not accepted", describe(h), h.APIVersion)
	}
	r := info.New()
	if err := json.Unmarshal(data, r); err != nil {
		return nil, fmt.Errorf("unmarshal %s: %w", describe(h), err)
	}
	*r.GetTypeMeta() = tm(info.Kind)
	return r, nil
}

// Clone returns a deep copy of a resource.
func Clone(r Resource) (Resource, error) {
	b, err := Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("clone resource: %w", err)
	}
	return Unmarshal(b)
}
