package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"regexp"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/terracenet/terrace/datastore"
	"github.com/terracenet/terrace/datastore/api"
	"github.com/terracenet/terrace/datastore/kv"
	"github.com/terracenet/terrace/ipam"
	"github.com/terracenet/terrace/node/nodeapi"
)

// The CNI plugin's work, served on the node socket: whole commands (POST /v1/cni, run by the
// CommandRunner; only root may ask, and stopping waits for those in flight) and the datastore
// calls a plugin process makes when it does a command itself. A plugin process per call cannot
// keep an etcd connection, and independent allocators in concurrent plugin processes fight over
// the node's block key with compare-and-swap; one warm allocator per node batches them instead.
//
// Routes (JSON bodies; errors are APIError with an HTTP status):
//
//	GET    /v1/datastore                         ready check: {"nodeName":...,"ready":true}
//	POST   /v1/ipam/assign                       AssignRequest -> AssignResponse
//	POST   /v1/ipam/release                      ReleaseRequest (handle or ips) -> ReleaseResponse
//	GET    /v1/ipam/handles/{handle}             -> HandleResponse (no addresses if unknown)
//	GET    /v1/endpoints/{namespace}/{name}      -> WorkloadEndpoint as stored
//	POST   /v1/endpoints                         create; PUT updates (CAS on resourceVersion)
//	DELETE /v1/endpoints/{namespace}/{name}[?resourceVersion=N]
//	GET    /v1/endpoints/{namespace}/{name}/status  the raw endpoint status value felix writes
//	POST   /v1/cni                               CNIRequest -> CNIResponse: a whole ADD, DEL or CHECK
//	                                             run here (404 when no runner is set; 403, 422 or
//	                                             503 when refused before anything was done)
//
// Only this node's resources are served: an assignment, endpoint or status of another node is
// refused, so a local caller cannot use the agent to write other hosts' state.

// The wire types and error codes live in package nodeapi, shared with the plugin.
type (
	APIError        = nodeapi.APIError
	DatastoreInfo   = nodeapi.DatastoreInfo
	AssignRequest   = nodeapi.AssignRequest
	AssignResponse  = nodeapi.AssignResponse
	ReleaseRequest  = nodeapi.ReleaseRequest
	ReleaseResponse = nodeapi.ReleaseResponse
	HandleResponse  = nodeapi.HandleResponse
)

// API error codes (see nodeapi).
const (
	CodeInvalid        = nodeapi.CodeInvalid
	CodeWrongNode      = nodeapi.CodeWrongNode
	CodeNotFound       = nodeapi.CodeNotFound
	CodeExists         = nodeapi.CodeExists
	CodeConflict       = nodeapi.CodeConflict
	CodePoolsExhausted = nodeapi.CodePoolsExhausted
	CodeNoPools        = nodeapi.CodeNoPools
	CodeAddressInUse   = nodeapi.CodeAddressInUse
	CodeNotInPool      = nodeapi.CodeNotInPool
	CodeUnavailable    = nodeapi.CodeUnavailable
	CodeInternal       = nodeapi.CodeInternal
)

// maxAssign bounds one request: a pod needs one address per family; more is a mistake or abuse.
const maxAssign = 16

// apiTimeout bounds the datastore work of one request, whatever the caller's patience.
const apiTimeout = 30 * time.Second

// maxReleaseIPs bounds the addresses one release by address names: room for everything one
// assignment can hand out (maxAssign per family) twice over.
const maxReleaseIPs = 4 * maxAssign

// maxBody bounds request bodies; a WorkloadEndpoint is a few hundred bytes.
const maxBody = 1 << 20

// DatastoreAPI serves the CNI plugin's datastore work for one node. It answers "unavailable"
// until SetDatastore is called, since the socket is served before etcd answers.
type DatastoreAPI struct {
	node string
	log  *slog.Logger
	st   atomic.Pointer[dsState]
	run  atomic.Pointer[CommandRunner]

	// Commands in flight, so stopping can wait for them: a command abandoned half-way would
	// leave a veth and an address without the undo the command itself would have done.
	cmdMu       sync.Mutex
	cmdStopping bool
	cmdRunning  sync.WaitGroup
	// cmdAttach counts the commands in flight per attachment (container ID and interface).
	// While stopping, a command for an attachment that still has one is taken, not refused:
	// refused, it would run in terrace-cni-etcd at the same time as the agent's (a DEL beside
	// the ADD it follows), where the runner's per-attachment lock cannot order them.
	cmdAttach map[string]int

	// Datastore requests in flight and when the last one started or ended: a plugin that began
	// its work through the agent before stopping (terrace-cni-etcd, GC) sends a sequence of
	// them, and stopping lets that sequence finish.
	reqMu       sync.Mutex
	reqInFlight int
	reqLast     time.Time
}

// drainQuiet is how long no datastore request must have been in flight before stopping goes on:
// longer than the gap between two requests of one plugin command (its netlink work).
const drainQuiet = 300 * time.Millisecond

// SetCommandRunner makes POST /v1/cni run commands with r.
func (a *DatastoreAPI) SetCommandRunner(r CommandRunner) { a.run.Store(&r) }

// CommandRunner runs one whole CNI command inside the agent (package cni provides it; node does
// not link the plugin's code). A *nodeapi.Refusal means the command was not started.
type CommandRunner func(ctx context.Context, req nodeapi.CNIRequest) (nodeapi.CNIResponse, error)

type dsState struct {
	store  *kv.Store
	client *datastore.Client
	alloc  *ipam.Allocator
}

// NewDatastoreAPI makes the API for node; it is not ready until SetDatastore.
func NewDatastoreAPI(node string, log *slog.Logger) *DatastoreAPI {
	return &DatastoreAPI{node: node, log: log.With("api", "datastore")}
}

// SetDatastore makes the API ready. The allocator is created here, once: its in-process batching
// of concurrent requests for one block is the point of serving IPAM from the agent.
func (a *DatastoreAPI) SetDatastore(store *kv.Store, client *datastore.Client) {
	a.st.Store(&dsState{store: store, client: client, alloc: ipam.New(store, client, a.log)})
}

// Handler serves the API's routes and hands every other request to next (the status board).
func (a *DatastoreAPI) Handler(next http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/", next)
	mux.HandleFunc("GET /v1/datastore", a.info)
	mux.HandleFunc("POST /v1/ipam/assign", a.ready(privileged(a.assign)))
	mux.HandleFunc("POST /v1/ipam/release", a.ready(privileged(a.release)))
	mux.HandleFunc("GET /v1/ipam/handles/{handle}", a.ready(a.handle))
	mux.HandleFunc("GET /v1/endpoints/{namespace}/{name}", a.ready(a.getEndpoint))
	mux.HandleFunc("GET /v1/endpoints/{namespace}/{name}/status", a.ready(a.endpointStatus))
	mux.HandleFunc("POST /v1/endpoints", a.ready(privileged(a.writeEndpoint(true))))
	mux.HandleFunc("PUT /v1/endpoints", a.ready(privileged(a.writeEndpoint(false))))
	mux.HandleFunc("DELETE /v1/endpoints/{namespace}/{name}", a.ready(privileged(a.deleteEndpoint)))
	mux.HandleFunc("POST /v1/cni", a.ready(privileged(a.cniCommand)))
	// Without these, a known path asked with the wrong method would fall through to the board's
	// mux and get its plain-text 404 instead of this API's JSON error.
	for _, path := range []string{"/v1/datastore", "/v1/ipam/assign", "/v1/ipam/release", "/v1/ipam/handles/{handle}",
		"/v1/endpoints", "/v1/endpoints/{namespace}/{name}", "/v1/endpoints/{namespace}/{name}/status", "/v1/cni"} {
		mux.HandleFunc(path, methodNotAllowed)
	}
	return mux
}

func methodNotAllowed(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusMethodNotAllowed, APIError{Code: CodeInvalid, Message: fmt.Sprintf("%s is not a method of %s", r.Method, r.URL.Path)})
}

// privileged refuses callers that may only read: assigning and releasing addresses, writing
// endpoints and running CNI commands change what the host routes and allows, and the socket's
// group is only meant to read status.
func privileged(f apiFunc) apiFunc {
	return func(ctx context.Context, st *dsState, w http.ResponseWriter, r *http.Request) error {
		if uid, ok := privilegedPeer(r.Context()); !ok {
			who := fmt.Sprintf("caller uid %d", uid)
			if uid == peerUnknown {
				who = "the caller's credentials could not be read"
			}
			return &nodeapi.Refusal{Code: nodeapi.CodeForbidden, Message: fmt.Sprintf("only root may change state through the node agent (%s)", who)}
		}
		return f(ctx, st, w, r)
	}
}

type apiFunc func(ctx context.Context, st *dsState, w http.ResponseWriter, r *http.Request) error

// httpError carries a status and code out of a handler.
type httpError struct {
	status int
	code   string
	err    error
}

func (e *httpError) Error() string { return e.err.Error() }
func (e *httpError) Unwrap() error { return e.err }

func badRequest(format string, a ...any) error {
	return &httpError{http.StatusBadRequest, CodeInvalid, fmt.Errorf(format, a...)}
}

func (a *DatastoreAPI) wrongNode(what, node string) error {
	return &httpError{http.StatusForbidden, CodeWrongNode,
		fmt.Errorf("%s is for node %q; this agent serves node %q only", what, node, a.node)}
}

func (a *DatastoreAPI) ready(f apiFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		a.reqMu.Lock()
		a.reqInFlight++
		a.reqLast = start
		a.reqMu.Unlock()
		defer func() {
			a.reqMu.Lock()
			a.reqInFlight--
			a.reqLast = time.Now()
			a.reqMu.Unlock()
		}()
		st := a.st.Load()
		var err error
		if st == nil {
			err = &httpError{http.StatusServiceUnavailable, CodeUnavailable, errors.New("the node agent is not connected to the datastore yet")}
		} else {
			ctx, cancel := context.WithTimeout(r.Context(), apiTimeout)
			err = f(ctx, st, w, r)
			cancel()
		}
		if err != nil {
			status, code := classify(err)
			a.log.Debug("request failed", "method", r.Method, "path", r.URL.Path, "status", status, "err", err, "took", time.Since(start))
			writeJSON(w, status, APIError{Code: code, Message: err.Error()})
			return
		}
		a.log.Debug("request served", "method", r.Method, "path", r.URL.Path, "took", time.Since(start))
	}
}

// classify maps an error to the HTTP status and code the plugin acts on.
func classify(err error) (int, string) {
	var he *httpError
	var ve *api.ValidationError
	var ref *nodeapi.Refusal
	switch {
	case errors.As(err, &he):
		return he.status, he.code
	case errors.As(err, &ref):
		switch ref.Code {
		case CodeWrongNode, nodeapi.CodeForbidden:
			return http.StatusForbidden, ref.Code
		case CodeUnavailable, nodeapi.CodeStopping:
			return http.StatusServiceUnavailable, ref.Code
		case nodeapi.CodeNetnsUnseen:
			return http.StatusUnprocessableEntity, ref.Code
		}
		return http.StatusBadRequest, CodeInvalid
	case errors.As(err, &ve):
		return http.StatusUnprocessableEntity, CodeInvalid
	case errors.Is(err, ipam.ErrOtherNode):
		return http.StatusForbidden, CodeWrongNode
	case errors.Is(err, ipam.ErrPoolsExhausted):
		return http.StatusConflict, CodePoolsExhausted
	case errors.Is(err, ipam.ErrNoPools), errors.Is(err, ipam.ErrPoolDisabled):
		return http.StatusUnprocessableEntity, CodeNoPools
	case errors.Is(err, ipam.ErrAddressInUse):
		return http.StatusConflict, CodeAddressInUse
	case errors.Is(err, ipam.ErrAddressNotInPool):
		return http.StatusUnprocessableEntity, CodeNotInPool
	case errors.Is(err, kv.ErrNotFound), errors.Is(err, ipam.ErrHandleNotFound):
		return http.StatusNotFound, CodeNotFound
	case errors.Is(err, kv.ErrExists):
		return http.StatusConflict, CodeExists
	case errors.Is(err, kv.ErrConflict):
		return http.StatusConflict, CodeConflict
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled),
		errors.Is(err, ipam.ErrTooManyRetries): // lost every race, wrote nothing: try again later
		return http.StatusServiceUnavailable, CodeUnavailable
	}
	return http.StatusInternalServerError, CodeInternal
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// decode reads a JSON body strictly: unknown fields and trailing data are errors, so a client
// built against another version of the API fails loudly rather than half-works.
func decode(r *http.Request, w http.ResponseWriter, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return badRequest("decode request body: %v", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return badRequest("decode request body: trailing data after the JSON value")
	}
	return nil
}

// infoPingTimeout bounds the readiness probe's look at etcd: a caller probing first wants a fast
// "no", not the 30 s an assignment would wait for a 503; the plugin gives up on the probe after
// 1 s, so the answer must come before that.
const infoPingTimeout = 800 * time.Millisecond

func (a *DatastoreAPI) info(w http.ResponseWriter, r *http.Request) {
	st := a.st.Load()
	if st == nil {
		writeJSON(w, http.StatusServiceUnavailable, APIError{Code: CodeUnavailable, Message: "the node agent is not connected to the datastore yet"})
		return
	}
	a.cmdMu.Lock()
	stopping := a.cmdStopping
	a.cmdMu.Unlock()
	if stopping {
		// A plugin that starts its work now would lose the agent half-way through it: it must
		// use etcd itself.
		writeJSON(w, http.StatusServiceUnavailable, APIError{Code: nodeapi.CodeStopping, Message: "terrace-node is stopping"})
		return
	}
	// Connected once is not connected now: ask etcd.
	ctx, cancel := context.WithTimeout(r.Context(), infoPingTimeout)
	defer cancel()
	if st.store != nil {
		if err := st.store.Ping(ctx); err != nil {
			writeJSON(w, http.StatusServiceUnavailable, APIError{Code: CodeUnavailable, Message: "the node agent's datastore does not answer: " + err.Error()})
			return
		}
	}
	writeJSON(w, http.StatusOK, DatastoreInfo{NodeName: a.node, Ready: true})
}

// CheckAssign refuses a request the allocator should never see.
func (a *DatastoreAPI) CheckAssign(req AssignRequest) error {
	switch {
	case req.Node != a.node:
		return a.wrongNode("the assignment", req.Node)
	case req.Handle == "":
		return badRequest("assign: handle is required")
	case len(req.IPs) > 0 && req.Num4+req.Num6 != 0:
		return badRequest("assign: give either ips or num4/num6, not both")
	case len(req.IPs) > maxAssign:
		return badRequest("assign: at most %d addresses may be requested (got %d)", maxAssign, len(req.IPs))
	case len(req.IPs) > 0:
		for i, ip := range req.IPs {
			if !ip.IsValid() || ip.Zone() != "" {
				return badRequest("assign: ips[%d] is missing or has a zone", i)
			}
			if slices.ContainsFunc(req.IPs[:i], func(o netip.Addr) bool { return o.Unmap() == ip.Unmap() }) {
				return badRequest("assign: ips[%d] (%s) is repeated", i, ip)
			}
		}
	case req.Num4 < 0 || req.Num6 < 0 || req.Num4 > maxAssign || req.Num6 > maxAssign:
		return badRequest("assign: num4 and num6 must be within 0-%d (got %d, %d)", maxAssign, req.Num4, req.Num6)
	case req.Num4+req.Num6 == 0:
		return badRequest("assign: nothing to assign (num4 and num6 are 0)")
	}
	for _, p := range append(append([]string(nil), req.IPv4Pools...), req.IPv6Pools...) {
		if p == "" {
			return badRequest("assign: empty pool name")
		}
	}
	if !handleRE.MatchString(req.Handle) {
		return badRequest("assign: handle %.80q must be 1-%d letters, digits, '.', '_' or '-'", req.Handle, maxHandle)
	}
	// The attributes are stored in the block with every address of it: one huge value would be
	// re-sent to etcd with every later allocation on the node.
	if len(req.Attrs) > maxAttrs {
		return badRequest("assign: at most %d attributes (got %d)", maxAttrs, len(req.Attrs))
	}
	for k, v := range req.Attrs {
		if k == "" || len(k) > maxAttrKey || len(v) > maxAttrValue {
			return badRequest("assign: attribute %.80q: keys are 1-%d bytes, values at most %d", k, maxAttrKey, maxAttrValue)
		}
	}
	return nil
}

// Bounds of what an assignment may carry into the IPAM records.
const (
	maxHandle    = 512
	maxAttrs     = 16
	maxAttrKey   = 63
	maxAttrValue = 1024
)

// handleRE is what CNI's network names and container IDs are made of (a handle is
// "<network>.<containerID>"); a '/' would reach into the handle's etcd key.
var handleRE = regexp.MustCompile(`^[A-Za-z0-9._-]{1,512}$`)

// checkHandleOwner refuses adding to a handle that holds another node's allocation: that node's
// DEL (which releases only its own node's) could then never free it.
func (a *DatastoreAPI) checkHandleOwner(ctx context.Context, st *dsState, handle string) error {
	ips, err := st.alloc.IPsByHandle(ctx, handle)
	if errors.Is(err, ipam.ErrHandleNotFound) || len(ips) == 0 {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read handle %s: %w", handle, err)
	}
	for _, ip := range ips {
		info, err := st.alloc.ShowIP(ctx, ip)
		if err != nil {
			return fmt.Errorf("read allocation %s of handle %s: %w", ip, handle, err)
		}
		if n := info.Attrs[ipam.AttrNode]; info.Allocated && info.Handle == handle && n != "" && n != a.node {
			return a.wrongNode(fmt.Sprintf("handle %s (it holds %s)", handle, ip), n)
		}
	}
	return nil
}

func (a *DatastoreAPI) assign(ctx context.Context, st *dsState, w http.ResponseWriter, r *http.Request) error {
	var req AssignRequest
	if err := decode(r, w, &req); err != nil {
		return err
	}
	if err := a.CheckAssign(req); err != nil {
		return err
	}
	for i := range req.IPs {
		req.IPs[i] = req.IPs[i].Unmap()
	}
	if err := a.checkHandleOwner(ctx, st, req.Handle); err != nil {
		return err
	}
	var got ipam.Assigned
	var err error
	if len(req.IPs) > 0 {
		got, err = st.alloc.AssignIPs(ctx, ipam.AssignIPsArgs{IPs: req.IPs, Handle: req.Handle, Node: req.Node, Attrs: req.Attrs})
	} else {
		got, err = st.alloc.AutoAssign(ctx, ipam.AutoAssignArgs{
			Node: req.Node, Handle: req.Handle, Num4: req.Num4, Num6: req.Num6, Attrs: req.Attrs,
			IPv4Pools: req.IPv4Pools, IPv6Pools: req.IPv6Pools,
		})
	}
	if err != nil {
		return err // ipam's error already names the handle and the node
	}
	writeJSON(w, http.StatusOK, AssignResponse{IPv4: nonNil(got.IPv4), IPv6: nonNil(got.IPv6)})
	return nil
}

func nonNil(a []netip.Addr) []netip.Addr {
	if a == nil {
		return []netip.Addr{}
	}
	return a
}

func (a *DatastoreAPI) release(ctx context.Context, st *dsState, w http.ResponseWriter, r *http.Request) error {
	var req ReleaseRequest
	if err := decode(r, w, &req); err != nil {
		return err
	}
	switch {
	case (req.Handle == "") == (len(req.IPs) == 0):
		return badRequest("release: give exactly one of handle or ips")
	case req.Handle != "":
		// Only this node's allocations: another host's pod must not lose its address
		// because a caller here named its handle or address.
		got, err := st.alloc.ReleaseByHandleOfNode(ctx, req.Handle, a.node)
		if err != nil && !errors.Is(err, ipam.ErrHandleNotFound) {
			return err
		}
		writeJSON(w, http.StatusOK, ReleaseResponse{Released: got})
		return nil
	}
	if len(req.IPs) > maxReleaseIPs {
		// A pod has one address per family; thousands in one request are a caller's bug, and
		// each costs block reads and writes inside one request's time budget.
		return badRequest("release: %d addresses in one request, at most %d", len(req.IPs), maxReleaseIPs)
	}
	for _, ip := range req.IPs {
		if !ip.IsValid() {
			return badRequest("release: invalid address")
		}
	}
	not, err := st.alloc.ReleaseIPsOfNode(ctx, a.node, req.IPs...)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, ReleaseResponse{Unallocated: not})
	return nil
}

// handle lists a handle's addresses, if the handle is this node's: a plugin that got another
// node's addresses for its handle (a repeated IPAM ADD returns them) would hand a pod an address
// routed to another host.
func (a *DatastoreAPI) handle(ctx context.Context, st *dsState, w http.ResponseWriter, r *http.Request) error {
	if err := a.checkHandleOwner(ctx, st, r.PathValue("handle")); err != nil {
		return err
	}
	ips, err := st.alloc.IPsByHandle(ctx, r.PathValue("handle"))
	if err != nil && !errors.Is(err, ipam.ErrHandleNotFound) {
		return fmt.Errorf("read handle %s: %w", r.PathValue("handle"), err)
	}
	writeJSON(w, http.StatusOK, HandleResponse{IPs: nonNil(ips)})
	return nil
}
