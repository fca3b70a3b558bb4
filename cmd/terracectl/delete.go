package main

// Deleting resources whose removal IPAM must follow: a Node gives up its blocks, an IPPool may
// not disappear from under allocated addresses.

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/terracenet/terrace/datastore"
	"github.com/terracenet/terrace/datastore/api"
	"github.com/terracenet/terrace/datastore/kv"
	"github.com/terracenet/terrace/ipam"
)

// deleteOpts are the delete command's flags every deletion sees.
type deleteOpts struct {
	ignoreNotFound bool
	force          bool
}

// deleteResource deletes r and says what happened. Nodes and IPPools go through IPAM.
func deleteResource(ctx context.Context, e *env, c *datastore.Client, r api.Resource, o deleteOpts) (string, error) {
	m := r.GetObjectMeta()
	if k := kindName(r); o.force && k != "IPPool" && k != "Node" {
		return "", &exitError{code: exitInput, err: fmt.Errorf("--force applies to IPPools and Nodes only, not %s", strings.ToLower(k))}
	}
	var what string
	var err error
	switch kindName(r) {
	case "Node":
		what, err = deleteNode(ctx, e, c, m.Name, m.ResourceVersion, o.force)
	case "IPPool":
		what, err = deletePool(ctx, e, c, m.Name, m.ResourceVersion, o.force)
	default:
		_, err = c.Delete(ctx, kindName(r), m.Namespace, m.Name, m.ResourceVersion)
		what = "deleted"
	}
	switch {
	case errors.Is(err, datastore.ErrNotFound) && o.ignoreNotFound:
		return "not found (ignored)", nil
	case errors.Is(err, datastore.ErrNotFound):
		return "", errors.New("not found")
	case errors.Is(err, datastore.ErrConflict):
		return "", conflictErr(m.ResourceVersion)
	}
	return what, err
}

// deleteNode deletes the Node and then releases its block affinities. The Node goes first so
// that a crash in between leaves blocks affine to a node that does not exist, which
// `ipam check` reports as orphan blocks and `ipam release --from-report` (or running this delete
// again) frees. The other order would leave a live Node without blocks while its daemon may
// already be claiming new ones, which nothing would notice.
func deleteNode(ctx context.Context, e *env, c *datastore.Client, name, rv string, force bool) (string, error) {
	// A node whose terrace-node runs holds its name (node.Run's claim): releasing its blocks
	// under it would hand its pods' addresses to other hosts while it still routes them.
	held, err := c.Store().Get(ctx, datastore.NodeInstanceKey(name))
	switch {
	case err == nil && !force:
		who := "a running terrace-node"
		if in, perr := datastore.ParseNodeInstance(held.Value); perr == nil {
			who = fmt.Sprintf("terrace-node on host %q (pid %d, since %s)", in.Hostname, in.PID, in.Since.Format(time.RFC3339))
		}
		return "", &exitError{code: exitInput, err: fmt.Errorf("%s holds this node; stop it first, or give --force", who)}
	case err != nil && !errors.Is(err, kv.ErrNotFound):
		return "", fmt.Errorf("read node instance: %w", err)
	}
	_, err = c.Delete(ctx, "Node", "", name, rv)
	gone := errors.Is(err, datastore.ErrNotFound)
	if err != nil && !gone {
		return "", err
	}
	a := ipam.New(c.Store(), c, e.log)
	rel, rerr := a.ReleaseNode(ctx, name)
	if rerr != nil {
		what := "deleted"
		if gone {
			what = "was not found"
		}
		return "", fmt.Errorf("%s, but releasing its address blocks failed (run `terracectl ipam release --node %s`): %w", what, name, rerr)
	}
	if gone && len(rel.Freed) == 0 && len(rel.Retained) == 0 {
		return "", err
	}
	var b strings.Builder
	if gone {
		// A delete interrupted after the Node went: finish it.
		b.WriteString("was already deleted; released the address blocks it still had")
	} else {
		b.WriteString("deleted")
	}
	for _, p := range rel.Freed {
		fmt.Fprintf(&b, "\n  freed block %s", p)
	}
	for _, u := range rel.Retained {
		fmt.Fprintf(&b, "\n  block %s keeps %s; it returns to the pool when they are released", u.CIDR, addresses(u.Used))
	}
	return b.String(), nil
}

// deletePool deletes an IPPool unless addresses are still allocated in it; a disabled pool goes
// anyway with force. The refusal is the user's input to change (exit status 2).
func deletePool(ctx context.Context, e *env, c *datastore.Client, name, rv string, force bool) (string, error) {
	a := ipam.New(c.Store(), c, e.log)
	res, err := a.DeletePool(ctx, name, rv, force)
	var inUse *ipam.PoolInUseError
	if errors.As(err, &inUse) {
		return "", &exitError{code: exitInput, err: err}
	}
	if err != nil {
		return "", err
	}
	var b strings.Builder
	b.WriteString("deleted")
	if n := len(res.FreedBlocks); n > 0 {
		fmt.Fprintf(&b, "; freed %d address block(s)", n)
	}
	if res.Retained > 0 {
		fmt.Fprintf(&b, "\n  its blocks keep %s until released; `terracectl ipam check` lists them", addresses(res.Retained))
	}
	return b.String(), nil
}

func addresses(n int) string {
	if n == 1 {
		return "1 allocated address"
	}
	return fmt.Sprintf("%d allocated addresses", n)
}
