package cni

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"sync"
	"time"

	"github.com/terracenet/terrace/datastore/api"
	"github.com/terracenet/terrace/node/nodeapi"
)

// The agent backend: the node agent (terrace-node) does the datastore work over its local socket,
// so a plugin process opens no etcd connection and every ADD on the node shares one allocator
// (node/ipamapi.go serves the routes; package nodeapi holds the JSON shapes both sides use).

// agentProbeTimeout bounds the readiness probe: a socket that does not answer at once is treated
// as no agent, and the plugin goes to etcd directly.
const agentProbeTimeout = time.Second

// Error codes of the node agent's API.
var agentCodes = map[string]error{
	nodeapi.CodeNotFound:       ErrNotFound,
	nodeapi.CodeExists:         ErrExists,
	nodeapi.CodeConflict:       ErrConflict,
	nodeapi.CodePoolsExhausted: ErrPoolsExhausted,
	nodeapi.CodeNoPools:        ErrNoPools,
	nodeapi.CodeAddressInUse:   ErrAddressInUse,
	nodeapi.CodeNotInPool:      ErrAddressNotInPool,
	nodeapi.CodeUnavailable:    ErrUnavailable,
}

// agentBackend is Backend over the node socket. What the agent does not serve (listing every
// endpoint or allocation, for GC) goes to etcd through a backend opened only when needed.
type agentBackend struct {
	socket, node string
	hc           *http.Client
	closeIdle    func()
	direct       func(context.Context) (Backend, error)

	mu sync.Mutex
	db Backend
}

// DialAgent returns a Backend served by the node agent on socket, if the agent answers there as
// ready and serving node; otherwise an error saying why, and the caller uses etcd directly.
// direct opens the etcd backend for the few calls the agent does not serve.
func DialAgent(ctx context.Context, socket, node string, direct func(context.Context) (Backend, error)) (Backend, error) {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
		MaxIdleConnsPerHost: 4,
	}
	b := &agentBackend{socket: socket, node: node, hc: &http.Client{Transport: tr}, closeIdle: tr.CloseIdleConnections, direct: direct}
	pctx, cancel := context.WithTimeout(ctx, agentProbeTimeout)
	defer cancel()
	var info nodeapi.DatastoreInfo
	if err := b.do(pctx, http.MethodGet, "/v1/datastore", nil, &info); err != nil {
		tr.CloseIdleConnections()
		return nil, fmt.Errorf("probe node agent: %w", err)
	}
	if !info.Ready || info.NodeName != node {
		tr.CloseIdleConnections()
		return nil, fmt.Errorf("probe node agent: it serves node %q (ready %v), this network's node is %q", info.NodeName, info.Ready, node)
	}
	return b, nil
}

// do sends one request; in (if not nil) is JSON-encoded unless it is already []byte, and a 2xx
// body is decoded into out (if not nil). Errors wrap the sentinel the agent's code means.
func (b *agentBackend) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	switch v := in.(type) {
	case nil:
	case []byte:
		body = bytes.NewReader(v)
	default:
		data, err := json.Marshal(v)
		if err != nil {
			return fmt.Errorf("encode request %s %s: %w", method, path, err)
		}
		body = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://terrace-node"+path, body)
	if err != nil {
		return fmt.Errorf("build request %s %s: %w", method, path, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := b.hc.Do(req)
	if err != nil {
		return fmt.Errorf("%w: node agent at %s: %w", ErrUnavailable, b.socket, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return fmt.Errorf("%w: read answer of node agent: %w", ErrUnavailable, err)
	}
	if resp.StatusCode/100 != 2 {
		var ae nodeapi.APIError
		if json.Unmarshal(data, &ae) != nil || ae.Code == "" {
			return fmt.Errorf("node agent %s %s: %s", method, path, resp.Status)
		}
		if sentinel, ok := agentCodes[ae.Code]; ok {
			return fmt.Errorf("node agent: %s: %w", ae.Message, sentinel)
		}
		return fmt.Errorf("node agent: %s (%s)", ae.Message, ae.Code)
	}
	if out == nil {
		return nil
	}
	if raw, ok := out.(*[]byte); ok {
		*raw = data
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("decode answer of node agent to %s %s: %w", method, path, err)
	}
	return nil
}

func endpointPath(namespace, name string) string {
	return "/v1/endpoints/" + url.PathEscape(namespace) + "/" + url.PathEscape(name)
}

func (b *agentBackend) endpointCall(ctx context.Context, method, path string, in any) (*api.WorkloadEndpoint, error) {
	var data []byte
	if err := b.do(ctx, method, path, in, &data); err != nil {
		return nil, err
	}
	r, err := api.Unmarshal(data)
	if err != nil {
		return nil, fmt.Errorf("decode workload endpoint from node agent: %w", err)
	}
	w, ok := r.(*api.WorkloadEndpoint)
	if !ok {
		return nil, fmt.Errorf("decode workload endpoint from node agent: got %T", r)
	}
	return w, nil
}

func (b *agentBackend) GetEndpoint(ctx context.Context, namespace, name string) (*api.WorkloadEndpoint, error) {
	return b.endpointCall(ctx, http.MethodGet, endpointPath(namespace, name), nil)
}

func (b *agentBackend) CreateEndpoint(ctx context.Context, w *api.WorkloadEndpoint) (*api.WorkloadEndpoint, error) {
	data, err := api.Marshal(w)
	if err != nil {
		return nil, fmt.Errorf("encode workload endpoint: %w", err)
	}
	return b.endpointCall(ctx, http.MethodPost, "/v1/endpoints", data)
}

func (b *agentBackend) UpdateEndpoint(ctx context.Context, w *api.WorkloadEndpoint) (*api.WorkloadEndpoint, error) {
	data, err := api.Marshal(w)
	if err != nil {
		return nil, fmt.Errorf("encode workload endpoint: %w", err)
	}
	return b.endpointCall(ctx, http.MethodPut, "/v1/endpoints", data)
}

func (b *agentBackend) DeleteEndpoint(ctx context.Context, namespace, name, resourceVersion string) error {
	path := endpointPath(namespace, name)
	if resourceVersion != "" {
		path += "?resourceVersion=" + url.QueryEscape(resourceVersion)
	}
	return b.do(ctx, http.MethodDelete, path, nil, nil)
}

func (b *agentBackend) AutoAssign(ctx context.Context, req AssignRequest) (v4, v6 []netip.Addr, err error) {
	var got nodeapi.AssignResponse
	err = b.do(ctx, http.MethodPost, "/v1/ipam/assign", nodeapi.AssignRequest{
		Node: req.Node, Handle: req.Handle, Num4: req.Num4, Num6: req.Num6, IPs: req.IPs, Attrs: req.Attrs,
		IPv4Pools: req.IPv4Pools, IPv6Pools: req.IPv6Pools,
	}, &got)
	if err != nil {
		return nil, nil, err
	}
	return got.IPv4, got.IPv6, nil
}

func (b *agentBackend) ReleaseIPs(ctx context.Context, ips ...netip.Addr) error {
	if len(ips) == 0 {
		return nil
	}
	return b.do(ctx, http.MethodPost, "/v1/ipam/release", nodeapi.ReleaseRequest{IPs: ips}, nil)
}

func (b *agentBackend) ReleaseHandle(ctx context.Context, handle string) error {
	return b.do(ctx, http.MethodPost, "/v1/ipam/release", nodeapi.ReleaseRequest{Handle: handle}, nil)
}

func (b *agentBackend) HandleAddrs(ctx context.Context, handle string) ([]netip.Addr, error) {
	var got nodeapi.HandleResponse
	if err := b.do(ctx, http.MethodGet, "/v1/ipam/handles/"+url.PathEscape(handle), nil, &got); err != nil {
		return nil, err
	}
	return got.IPs, nil
}

// GetRaw serves this node's endpoint status keys (what ADD polls for) from the agent, anything
// else from etcd.
func (b *agentBackend) GetRaw(ctx context.Context, key string) ([]byte, bool, error) {
	node, ns, name, err := parseEndpointStatusKey(key)
	if err != nil || node != b.node {
		db, err := b.etcd(ctx)
		if err != nil {
			return nil, false, err
		}
		return db.GetRaw(ctx, key)
	}
	var data []byte
	err = b.do(ctx, http.MethodGet, endpointPath(ns, name)+"/status", nil, &data)
	if errors.Is(err, ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	return data, true, nil
}

func (b *agentBackend) ListEndpoints(ctx context.Context) ([]*api.WorkloadEndpoint, error) {
	db, err := b.etcd(ctx)
	if err != nil {
		return nil, err
	}
	return db.ListEndpoints(ctx)
}

func (b *agentBackend) NodeAllocations(ctx context.Context, node string) ([]Allocation, error) {
	db, err := b.etcd(ctx)
	if err != nil {
		return nil, err
	}
	return db.NodeAllocations(ctx, node)
}

// etcd opens the direct backend on first use.
func (b *agentBackend) etcd(ctx context.Context) (Backend, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.db != nil {
		return b.db, nil
	}
	if b.direct == nil {
		return nil, fmt.Errorf("%w: no direct datastore connection configured", ErrUnavailable)
	}
	db, err := b.direct(ctx)
	if err != nil {
		return nil, err
	}
	b.db = db
	return db, nil
}

func (b *agentBackend) Close() error {
	b.closeIdle()
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.db != nil {
		return b.db.Close()
	}
	return nil
}

// connectBackend picks the backend for one command: the node agent when UseAgent is set and the
// agent answers as ready for this node, etcd directly otherwise. It logs which, and why.
func (p *Plugin) connectBackend(ctx context.Context, cfg *Config, log *slog.Logger) (Backend, string, error) {
	direct := func(ctx context.Context) (Backend, error) { return p.Connect(ctx, cfg.Etcd, log) }
	if p.UseAgent && !p.agentAbsent {
		be, err := DialAgent(ctx, cfg.NodeSocket, cfg.Node, direct)
		if err == nil {
			log.Debug("datastore work goes through the node agent", "socket", cfg.NodeSocket)
			return be, "agent", nil
		}
		log.Info("node agent not usable; using etcd directly", "socket", cfg.NodeSocket, "reason", err)
	}
	be, err := direct(ctx)
	return be, "etcd", err
}
