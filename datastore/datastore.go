// Package datastore is Terrace's typed resource store on top of package kv: it maps resources to
// etcd keys (/terrace/v1/<plural>/[<namespace>/]<name>), runs defaults and validation on every
// write, keeps resource versions as etcd mod revisions for optimistic concurrency, and turns kv's
// syncer output into typed updates. It must never write a resource that failed validation, never
// write outside /terrace/v1/, and never retry a conflicting write on the caller's behalf.
package datastore

import (
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"

	"github.com/terracenet/terrace/datastore/api"
	"github.com/terracenet/terrace/datastore/kv"
)

// KeyPrefix is where every resource lives.
const KeyPrefix = "/terrace/v1/"

// DefaultNamespace is used for namespaced kinds when a caller gives no namespace, as calicoctl does.
const DefaultNamespace = "default"

// Errors, the same values as kv's so errors.Is works across both layers.
var (
	ErrNotFound = kv.ErrNotFound
	ErrExists   = kv.ErrExists
	ErrConflict = kv.ErrConflict
	// ErrUndecodable: a stored value is not a resource of its key's kind (written by hand, or
	// by a version that stored something this one cannot read).
	ErrUndecodable = errors.New("stored value cannot be decoded")
)

// Key returns the etcd key of one resource. For kinds that are not namespaced namespace is ignored.
func Key(info api.KindInfo, namespace, name string) string {
	if info.Namespaced {
		return KeyPrefix + info.Plural + "/" + namespace + "/" + name
	}
	return KeyPrefix + info.Plural + "/" + name
}

// kindPrefix is the key prefix of every resource of a kind, or of a kind in one namespace.
func kindPrefix(info api.KindInfo, namespace string) string {
	if info.Namespaced && namespace != "" {
		return KeyPrefix + info.Plural + "/" + namespace + "/"
	}
	return KeyPrefix + info.Plural + "/"
}

// ParseKey is the inverse of Key.
func ParseKey(key string) (info api.KindInfo, namespace, name string, err error) {
	rest, ok := strings.CutPrefix(key, KeyPrefix)
	if !ok {
		return api.KindInfo{}, "", "", fmt.Errorf("parse key %q: not under %s", key, KeyPrefix)
	}
	parts := strings.Split(rest, "/")
	info, found := kindByPlural(parts[0])
	if !found {
		return api.KindInfo{}, "", "", fmt.Errorf("parse key %q: unknown kind segment %q", key, parts[0])
	}
	want := 2
	if info.Namespaced {
		want = 3
	}
	if len(parts) != want {
		return api.KindInfo{}, "", "", fmt.Errorf("parse key %q: %s keys have %d segments after %s, not %d", key, info.Kind, want, KeyPrefix, len(parts))
	}
	for _, p := range parts[1:] {
		if p == "" {
			return api.KindInfo{}, "", "", fmt.Errorf("parse key %q: empty segment", key)
		}
	}
	if info.Namespaced {
		return info, parts[1], parts[2], nil
	}
	return info, "", parts[1], nil
}

func kindByPlural(plural string) (api.KindInfo, bool) {
	for _, k := range api.Kinds() {
		if k.Plural == plural {
			return k, true
		}
	}
	return api.KindInfo{}, false
}

// kindIndex orders resources of different kinds as api.Kinds does.
func kindIndex(kind string) int {
	for i, k := range api.Kinds() {
		if k.Kind == kind {
			return i
		}
	}
	return len(api.Kinds())
}

// Client reads and writes typed resources.
type Client struct {
	store *kv.Store
	log   *slog.Logger
}

// New wraps a connected store.
func New(store *kv.Store, log *slog.Logger) *Client {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Client{store: store, log: log}
}

// Store returns the raw store, for IPAM and others with their own keys.
func (c *Client) Store() *kv.Store { return c.store }

// ParseVersion turns a resourceVersion into an etcd revision; "" is 0. A malformed one is the
// caller's input, so it comes back as a validation error naming the field.
func ParseVersion(info api.KindInfo, namespace, name, rv string) (int64, error) {
	if rv == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(rv, 10, 64)
	if err != nil || n <= 0 {
		return 0, &api.ValidationError{Kind: info.Kind, Namespace: namespace, Name: name, Fields: []api.FieldError{{
			Path:   "metadata.resourceVersion",
			Reason: fmt.Sprintf("%q is not an etcd revision (a positive integer)", rv),
		}}}
	}
	return n, nil
}

func formatVersion(rev int64) string { return strconv.FormatInt(rev, 10) }

// newUID returns a random RFC 4122 version 4 UUID.
func newUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on Linux
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// describe names a resource in errors the way users wrote it.
func describe(info api.KindInfo, namespace, name string) string {
	if info.Namespaced {
		return fmt.Sprintf("%s %s/%s", info.Kind, namespace, name)
	}
	return fmt.Sprintf("%s %q", info.Kind, name)
}

// lookup resolves a kind name as users type it.
func lookup(kind string) (api.KindInfo, error) {
	info, err := api.LookupKind(kind)
	if err != nil {
		return api.KindInfo{}, err
	}
	return info, nil
}

// scope fills in the namespace rules: default for namespaced kinds, none for the others.
func scope(info api.KindInfo, namespace string) string {
	if !info.Namespaced {
		return ""
	}
	if namespace == "" {
		return DefaultNamespace
	}
	return namespace
}

var errNilResource = errors.New("nil resource")
