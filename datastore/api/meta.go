// Package api is Terrace's resource model: the kinds, their fields (named as in Calico's v3 API so
// Calico manifests apply unchanged), defaults, decoding of YAML/JSON documents and validation.
// It owns what a valid resource is; it must never do I/O or talk to etcd.
package api

// Group versions accepted on input; GroupVersion is what Terrace writes.
const (
	GroupVersion       = "terrace.dev/v1"
	CalicoGroupVersion = "projectcalico.org/v3"
)

// TypeMeta names a document's kind and API version.
type TypeMeta struct {
	Kind       string `json:"kind,omitempty"`
	APIVersion string `json:"apiVersion,omitempty"`
}

// ObjectMeta is the metadata every resource carries (a subset of Kubernetes' ObjectMeta).
type ObjectMeta struct {
	Name              string            `json:"name,omitempty"`
	Namespace         string            `json:"namespace,omitempty"`
	ResourceVersion   string            `json:"resourceVersion,omitempty"`
	UID               string            `json:"uid,omitempty"`
	CreationTimestamp string            `json:"creationTimestamp,omitempty"`
	Labels            map[string]string `json:"labels,omitempty"`
	Annotations       map[string]string `json:"annotations,omitempty"`
}

// Resource is implemented by every kind.
type Resource interface {
	GetTypeMeta() *TypeMeta
	GetObjectMeta() *ObjectMeta
}

// KindInfo describes one kind for the registry.
type KindInfo struct {
	Kind       string   // e.g. "GlobalNetworkPolicy"
	Plural     string   // lower-case plural, also the etcd key segment, e.g. "globalnetworkpolicies"
	Aliases    []string // other accepted names: singular lower-case, short names ("gnp")
	Namespaced bool
	New        func() Resource // a zero value with TypeMeta set
}
