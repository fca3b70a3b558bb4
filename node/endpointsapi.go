package node

// The endpoint routes of the node API (GET, POST, PUT, DELETE /v1/endpoints/...): the plugin's
// WorkloadEndpoint reads and writes, limited to this node's endpoints.

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/terracenet/terrace/datastore"
	"github.com/terracenet/terrace/datastore/api"
	"github.com/terracenet/terrace/datastore/kv"
)

// getOwnEndpoint reads an endpoint and refuses one of another node.
func (a *DatastoreAPI) getOwnEndpoint(ctx context.Context, st *dsState, namespace, name string) (*api.WorkloadEndpoint, error) {
	res, err := st.client.Get(ctx, "WorkloadEndpoint", namespace, name)
	if err != nil {
		return nil, fmt.Errorf("read workload endpoint %s/%s: %w", namespace, name, err)
	}
	wep, ok := res.(*api.WorkloadEndpoint)
	if !ok {
		return nil, fmt.Errorf("read workload endpoint %s/%s: got %T", namespace, name, res)
	}
	if wep.Spec.Node != a.node {
		return nil, a.wrongNode("workload endpoint "+namespace+"/"+name, wep.Spec.Node)
	}
	return wep, nil
}

func writeResource(w http.ResponseWriter, status int, res api.Resource) error {
	data, err := api.Marshal(res)
	if err != nil {
		return fmt.Errorf("encode %s: %w", res.GetObjectMeta().Name, err)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(data)
	return nil
}

func (a *DatastoreAPI) getEndpoint(ctx context.Context, st *dsState, w http.ResponseWriter, r *http.Request) error {
	wep, err := a.getOwnEndpoint(ctx, st, r.PathValue("namespace"), r.PathValue("name"))
	if err != nil {
		return err
	}
	return writeResource(w, http.StatusOK, wep)
}

func (a *DatastoreAPI) endpointStatus(ctx context.Context, st *dsState, w http.ResponseWriter, r *http.Request) error {
	key := datastore.EndpointStatusKey(a.node, r.PathValue("namespace"), r.PathValue("name"))
	e, err := st.store.Get(ctx, key)
	if err != nil {
		return fmt.Errorf("read %s: %w", key, err)
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(e.Value)
	return nil
}

func (a *DatastoreAPI) writeEndpoint(create bool) apiFunc {
	return func(ctx context.Context, st *dsState, w http.ResponseWriter, r *http.Request) error {
		data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
		if err != nil {
			return badRequest("read request body: %v", err)
		}
		res, err := api.Unmarshal(data)
		if err != nil {
			return badRequest("decode workload endpoint: %v", err)
		}
		wep, ok := res.(*api.WorkloadEndpoint)
		if !ok {
			return badRequest("decode workload endpoint: got kind %q", res.GetTypeMeta().Kind)
		}
		if wep.Spec.Node != a.node {
			return a.wrongNode("workload endpoint "+wep.Metadata.Namespace+"/"+wep.Metadata.Name, wep.Spec.Node)
		}
		if create {
			res, err = st.client.Create(ctx, wep)
		} else {
			// The stored endpoint must be this node's too, and the update lands on exactly the
			// revision checked: else a caller here could move another host's pod to this one.
			cur, err := a.getOwnEndpoint(ctx, st, wep.Metadata.Namespace, wep.Metadata.Name)
			if err != nil {
				return err
			}
			if err := sameRevision(wep.Metadata.ResourceVersion, cur); err != nil {
				return err
			}
			wep.Metadata.ResourceVersion = cur.Metadata.ResourceVersion
			res, err = st.client.Update(ctx, wep)
			if err != nil {
				return fmt.Errorf("write workload endpoint %s/%s: %w", wep.Metadata.Namespace, wep.Metadata.Name, err)
			}
			return writeResource(w, http.StatusOK, res)
		}
		if err != nil {
			return fmt.Errorf("write workload endpoint %s/%s: %w", wep.Metadata.Namespace, wep.Metadata.Name, err)
		}
		status := http.StatusOK
		if create {
			status = http.StatusCreated
		}
		return writeResource(w, status, res)
	}
}

// sameRevision refuses a caller's resourceVersion other than the stored one the ownership check read.
func sameRevision(rv string, cur *api.WorkloadEndpoint) error {
	if rv != "" && rv != cur.Metadata.ResourceVersion {
		return fmt.Errorf("workload endpoint %s/%s is at resourceVersion %s, not %s: %w",
			cur.Metadata.Namespace, cur.Metadata.Name, cur.Metadata.ResourceVersion, rv, kv.ErrConflict)
	}
	return nil
}

func (a *DatastoreAPI) deleteEndpoint(ctx context.Context, st *dsState, w http.ResponseWriter, r *http.Request) error {
	ns, name := r.PathValue("namespace"), r.PathValue("name")
	cur, err := a.getOwnEndpoint(ctx, st, ns, name)
	if err != nil {
		return err
	}
	rv := r.URL.Query().Get("resourceVersion")
	if _, err := strconv.ParseUint(rv, 10, 64); rv != "" && err != nil {
		return badRequest("delete: resourceVersion %q is not a revision number", rv)
	}
	// Delete exactly what was checked to be this node's, not whatever is there by then.
	if err := sameRevision(rv, cur); err != nil {
		return err
	}
	rv = cur.Metadata.ResourceVersion
	if _, err := st.client.Delete(ctx, "WorkloadEndpoint", ns, name, rv); err != nil {
		return fmt.Errorf("delete workload endpoint %s/%s: %w", ns, name, err)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
