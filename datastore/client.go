package datastore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/terracenet/terrace/datastore/api"
	"github.com/terracenet/terrace/datastore/kv"
)

// ApplyOutcome says what Apply did.
type ApplyOutcome int

const (
	Created ApplyOutcome = iota
	Updated
	Unchanged
)

func (o ApplyOutcome) String() string {
	switch o {
	case Created:
		return "created"
	case Updated:
		return "updated"
	case Unchanged:
		return "unchanged"
	}
	return "unknown"
}

// poolRetries bounds how often a pool write re-runs its overlap check when another pool was
// written between the check and the commit. The caller's own write did not conflict, so this is
// not a retry on its behalf.
const poolRetries = 5

// errPoolsChanged is internal: another pool changed between the overlap check and the commit.
var errPoolsChanged = errors.New("pools changed during the overlap check")

// decode turns a stored key into a resource whose name, namespace and resourceVersion come from
// etcd, not from whatever the stored JSON says.
func decode(item kv.KV) (api.Resource, error) {
	info, ns, name, err := ParseKey(item.Key)
	if err != nil {
		return nil, err
	}
	r, err := api.Unmarshal(item.Value)
	if err != nil {
		return nil, fmt.Errorf("decode %s: %w: %w", item.Key, ErrUndecodable, err)
	}
	got, err := api.KindOf(r)
	if err != nil || got.Kind != info.Kind {
		return nil, fmt.Errorf("decode %s: %w: stored kind %q does not match the key", item.Key, ErrUndecodable, r.GetTypeMeta().Kind)
	}
	m := r.GetObjectMeta()
	m.Name, m.Namespace, m.ResourceVersion = name, ns, formatVersion(item.Revision)
	return r, nil
}

// prepare copies r (the caller's value is never modified), scopes its namespace, applies
// defaults and validates it. A validation failure is returned as the *api.ValidationError itself.
func prepare(r api.Resource) (api.Resource, api.KindInfo, error) {
	if r == nil {
		return nil, api.KindInfo{}, errNilResource
	}
	res, err := api.Clone(r)
	if err != nil {
		return nil, api.KindInfo{}, err
	}
	info, err := api.KindOf(res)
	if err != nil {
		return nil, api.KindInfo{}, err
	}
	m := res.GetObjectMeta()
	m.Namespace = scope(info, m.Namespace)
	api.SetDefaults(res)
	if err := api.Validate(res); err != nil {
		return nil, api.KindInfo{}, err
	}
	return res, info, nil
}

// Get reads one resource.
func (c *Client) Get(ctx context.Context, kind, namespace, name string) (api.Resource, error) {
	info, err := lookup(kind)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", kind, err)
	}
	namespace = scope(info, namespace)
	item, err := c.store.Get(ctx, Key(info, namespace, name))
	if err != nil {
		return nil, wrap("get", info, namespace, name, err)
	}
	return decode(item)
}

// List reads every resource of a kind ("" = every kind) in a namespace ("" = all namespaces;
// resources of kinds that are not namespaced are always included). Resources come ordered by
// kind as api.Kinds orders them, then by namespace and name. A stored value that cannot be
// decoded is left out and named in the returned error, alongside everything that could be read.
func (c *Client) List(ctx context.Context, kind, namespace string) ([]api.Resource, error) {
	prefix := KeyPrefix
	var info api.KindInfo
	if kind != "" {
		var err error
		if info, err = lookup(kind); err != nil {
			return nil, fmt.Errorf("list %s: %w", kind, err)
		}
		prefix = kindPrefix(info, namespace)
	}
	items, _, err := c.store.List(ctx, prefix)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", listWhat(info, namespace), err)
	}
	out := make([]api.Resource, 0, len(items))
	var errs []error
	for _, item := range items {
		r, err := decode(item)
		if err != nil {
			c.log.Warn("skipping undecodable resource", "key", item.Key, "error", err)
			errs = append(errs, err)
			continue
		}
		if kind == "" && namespace != "" {
			if m := r.GetObjectMeta(); m.Namespace != "" && m.Namespace != namespace {
				continue
			}
		}
		out = append(out, r)
	}
	if kind == "" {
		slices.SortStableFunc(out, func(a, b api.Resource) int {
			return kindIndex(a.GetTypeMeta().Kind) - kindIndex(b.GetTypeMeta().Kind)
		})
	}
	if len(errs) > 0 {
		return out, fmt.Errorf("list %s: %w", listWhat(info, namespace), errors.Join(errs...))
	}
	return out, nil
}

func listWhat(info api.KindInfo, namespace string) string {
	what := "all kinds"
	if info.Kind != "" {
		what = info.Plural
	}
	if namespace != "" {
		what += " in namespace " + namespace
	}
	return what
}

// Create writes a new resource; ErrExists if one with its name is already stored.
func (c *Client) Create(ctx context.Context, r api.Resource) (api.Resource, error) {
	res, info, err := prepare(r)
	if err != nil {
		return nil, err
	}
	m := res.GetObjectMeta()
	// What a user copied from `get -o yaml` must not leak into a new object's identity.
	m.ResourceVersion = ""
	m.UID = newUID()
	m.CreationTimestamp = time.Now().UTC().Format(time.RFC3339)
	key := Key(info, m.Namespace, m.Name)
	data, err := api.Marshal(res)
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", describe(info, m.Namespace, m.Name), err)
	}
	rev, err := c.write(ctx, res, kv.Op{Kind: kv.OpCreate, Key: key, Value: data})
	if err != nil {
		return nil, wrap("create", info, m.Namespace, m.Name, err)
	}
	m.ResourceVersion = formatVersion(rev)
	c.log.Debug("created resource", "kind", info.Kind, "namespace", m.Namespace, "name", m.Name, "revision", rev)
	return res, nil
}

// Update replaces a stored resource. With metadata.resourceVersion set the write happens only if
// the stored resource is still at that version; without it, only if it did not change since this
// call read it. uid and creationTimestamp are kept from the stored resource.
func (c *Client) Update(ctx context.Context, r api.Resource) (api.Resource, error) {
	res, info, err := prepare(r)
	if err != nil {
		return nil, err
	}
	m := res.GetObjectMeta()
	want, err := ParseVersion(info, m.Namespace, m.Name, m.ResourceVersion)
	if err != nil {
		return nil, err
	}
	cur, err := c.store.Get(ctx, Key(info, m.Namespace, m.Name))
	if err != nil {
		return nil, wrap("update", info, m.Namespace, m.Name, err)
	}
	out, _, err := c.update(ctx, res, info, cur, want, false)
	return out, err
}

// Apply creates the resource or updates it to match r, and says which it did. An update that
// would change nothing is not written (Unchanged).
func (c *Client) Apply(ctx context.Context, r api.Resource) (api.Resource, ApplyOutcome, error) {
	res, info, err := prepare(r)
	if err != nil {
		return nil, 0, err
	}
	m := res.GetObjectMeta()
	want, err := ParseVersion(info, m.Namespace, m.Name, m.ResourceVersion)
	if err != nil {
		return nil, 0, err
	}
	cur, err := c.store.Get(ctx, Key(info, m.Namespace, m.Name))
	if errors.Is(err, kv.ErrNotFound) {
		// As calicoctl: a version read elsewhere (a backup restored into a fresh datastore, an
		// export from another cluster) means nothing when the object is not stored; Create
		// drops it.
		created, err := c.Create(ctx, res)
		return created, Created, err
	}
	if err != nil {
		return nil, 0, wrap("apply", info, m.Namespace, m.Name, err)
	}
	return c.update(ctx, res, info, cur, want, true)
}

// update writes res over cur. want 0 means "whatever cur is". With skipSame, an update that
// changes nothing is not written.
func (c *Client) update(ctx context.Context, res api.Resource, info api.KindInfo, cur kv.KV, want int64, skipSame bool) (api.Resource, ApplyOutcome, error) {
	m := res.GetObjectMeta()
	if want == 0 {
		want = cur.Revision
	}
	if want != cur.Revision {
		return nil, 0, fmt.Errorf("update %s: resourceVersion %d, stored %d: %w",
			describe(info, m.Namespace, m.Name), want, cur.Revision, ErrConflict)
	}
	old, err := decode(cur)
	if err != nil {
		// A stored value nobody can read is replaced; keeping the object's identity is then moot.
		c.log.Warn("replacing undecodable resource", "key", cur.Key, "error", err)
		m.UID, m.CreationTimestamp = newUID(), time.Now().UTC().Format(time.RFC3339)
	} else {
		// Some fields are fixed once written (a pool's CIDR and block size): blocks were carved from them.
		if err := api.ValidateUpdate(old, res); err != nil {
			return nil, 0, err
		}
		om := old.GetObjectMeta()
		m.UID, m.CreationTimestamp = om.UID, om.CreationTimestamp
	}
	m.ResourceVersion = ""
	data, err := api.Marshal(res)
	if err != nil {
		return nil, 0, fmt.Errorf("update %s: %w", describe(info, m.Namespace, m.Name), err)
	}
	if skipSame && old != nil && bytes.Equal(data, cur.Value) {
		return old, Unchanged, nil
	}
	if skipSame && old != nil {
		// The stored bytes may predate a field order change; compare canonical encodings too.
		om := old.GetObjectMeta()
		rv := om.ResourceVersion
		om.ResourceVersion = ""
		canon, err := api.Marshal(old)
		om.ResourceVersion = rv
		if err == nil && bytes.Equal(data, canon) {
			return old, Unchanged, nil
		}
	}
	rev, err := c.write(ctx, res, kv.Op{Kind: kv.OpUpdate, Key: cur.Key, Value: data, Rev: want})
	if err != nil {
		return nil, 0, wrap("update", info, m.Namespace, m.Name, err)
	}
	m.ResourceVersion = formatVersion(rev)
	c.log.Debug("updated resource", "kind", info.Kind, "namespace", m.Namespace, "name", m.Name, "revision", rev)
	return res, Updated, nil
}

// write performs one create or update. An IPPool is written together with a check that no pool
// changed since its overlap check, so two overlapping pools can never both be stored.
func (c *Client) write(ctx context.Context, res api.Resource, op kv.Op) (int64, error) {
	pool, ok := res.(*api.IPPool)
	if !ok {
		if op.Kind == kv.OpCreate {
			return c.store.Create(ctx, op.Key, op.Value)
		}
		return c.store.Update(ctx, op.Key, op.Value, op.Rev)
	}
	for range poolRetries {
		guard, err := c.poolGuard(ctx, pool)
		if err != nil {
			return 0, err
		}
		rev, err := c.store.Commit(ctx, op, guard)
		if err == nil {
			return rev, nil
		}
		if !errors.Is(err, kv.ErrConflict) {
			return 0, err
		}
		// Tell a failure of the write itself from a change to some other pool.
		cur, gerr := c.store.Get(ctx, op.Key)
		switch {
		case op.Kind == kv.OpCreate && gerr == nil:
			return 0, kv.ErrExists
		case op.Kind == kv.OpUpdate && errors.Is(gerr, kv.ErrNotFound):
			return 0, kv.ErrNotFound
		case op.Kind == kv.OpUpdate && gerr == nil && cur.Revision != op.Rev:
			return 0, fmt.Errorf("stored at revision %d, not %d: %w", cur.Revision, op.Rev, kv.ErrConflict)
		}
		c.log.Debug("pools changed during overlap check, checking again", "key", op.Key)
	}
	return 0, fmt.Errorf("%w after %d attempts: %w", errPoolsChanged, poolRetries, kv.ErrConflict)
}

// poolGuard checks pool against every stored pool and returns the commit condition that keeps
// the check true.
func (c *Client) poolGuard(ctx context.Context, pool *api.IPPool) (kv.Op, error) {
	info, err := api.KindOf(pool)
	if err != nil {
		return kv.Op{}, err
	}
	prefix := kindPrefix(info, "")
	items, rev, err := c.store.List(ctx, prefix)
	if err != nil {
		return kv.Op{}, err
	}
	others := make([]*api.IPPool, 0, len(items))
	for _, item := range items {
		r, err := decode(item)
		if err != nil {
			c.log.Warn("overlap check skips undecodable pool", "key", item.Key, "error", err)
			continue
		}
		if p, ok := r.(*api.IPPool); ok {
			others = append(others, p)
		}
	}
	if err := api.CheckPoolOverlap(pool, others); err != nil {
		return kv.Op{}, err
	}
	return kv.Op{Kind: kv.OpCheckPrefix, Key: prefix, Rev: rev}, nil
}

// Delete removes a resource and returns what was stored, or nil when that could not be decoded
// (logged: the delete happened, which is what the caller asked for). A non-empty
// resourceVersion makes the delete conditional on it.
func (c *Client) Delete(ctx context.Context, kind, namespace, name, resourceVersion string) (api.Resource, error) {
	info, err := lookup(kind)
	if err != nil {
		return nil, fmt.Errorf("delete %s: %w", kind, err)
	}
	namespace = scope(info, namespace)
	rev, err := ParseVersion(info, namespace, name, resourceVersion)
	if err != nil {
		return nil, err
	}
	prev, err := c.store.Delete(ctx, Key(info, namespace, name), rev)
	if err != nil {
		return nil, wrap("delete", info, namespace, name, err)
	}
	c.log.Debug("deleted resource", "kind", info.Kind, "namespace", namespace, "name", name, "revision", prev.Revision)
	r, err := decode(prev)
	if err != nil {
		c.log.Warn("deleted a stored value that could not be decoded", "kind", info.Kind, "namespace", namespace, "name", name, "err", err)
		return nil, nil
	}
	return r, nil
}

// wrap names the resource and keeps the kv sentinel (and a validation error) reachable.
func wrap(verb string, info api.KindInfo, namespace, name string, err error) error {
	var ve *api.ValidationError
	if errors.As(err, &ve) {
		return err
	}
	d := describe(info, namespace, name)
	for _, sentinel := range []error{kv.ErrNotFound, kv.ErrExists} {
		if errors.Is(err, sentinel) {
			return fmt.Errorf("%s %s: %w", verb, d, sentinel)
		}
	}
	return fmt.Errorf("%s %s: %w", verb, d, err)
}
