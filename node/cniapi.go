package node

// The whole-command route of the node API (POST /v1/cni) and the drain that stopping waits for.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/terracenet/terrace/node/nodeapi"
)

// cniCommand runs a whole CNI command for the plugin. The command's own failures are a CNI error in
// a 200 answer; only a command not started at all is an API error.
func (a *DatastoreAPI) cniCommand(ctx context.Context, _ *dsState, w http.ResponseWriter, r *http.Request) error {
	run := a.run.Load()
	if run == nil {
		return &httpError{http.StatusNotFound, CodeNotFound, errors.New("this agent does not run CNI commands")}
	}
	var req nodeapi.CNIRequest
	if err := decode(r, w, &req); err != nil {
		return err
	}
	key := req.AttachmentKey()
	a.cmdMu.Lock()
	if a.cmdStopping && a.cmdAttach[key] == 0 {
		a.cmdMu.Unlock()
		return &nodeapi.Refusal{Code: nodeapi.CodeStopping, Message: "terrace-node is stopping"}
	}
	// While stopping the counter is above zero here (this attachment's command holds it), so
	// the Add cannot race the drain's Wait.
	a.cmdRunning.Add(1)
	if a.cmdAttach == nil {
		a.cmdAttach = map[string]int{}
	}
	a.cmdAttach[key]++
	a.cmdMu.Unlock()
	defer func() {
		a.cmdMu.Lock()
		if a.cmdAttach[key]--; a.cmdAttach[key] == 0 {
			delete(a.cmdAttach, key)
		}
		a.cmdMu.Unlock()
		a.cmdRunning.Done()
	}()
	start := time.Now()
	resp, err := (*run)(ctx, req)
	if err == nil {
		outcome := "ok"
		if resp.Error != nil {
			outcome = resp.Error.Msg
		}
		a.log.Info("CNI command run", "cmd", req.Command, "containerID", req.ContainerID, "ifname", req.IfName, "pluginPid", req.PluginPid, "took", time.Since(start), "outcome", outcome)
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, resp)
	return nil
}

// DrainCommands refuses new CNI commands (the plugin then does them itself), except for an
// attachment with a command still in flight, and reports the datastore API as not ready (a plugin
// probing now uses etcd itself). It waits until the commands running have finished and no
// datastore request has been in flight for drainQuiet, or ctx ends.
func (a *DatastoreAPI) DrainCommands(ctx context.Context) error {
	a.cmdMu.Lock()
	a.cmdStopping = true
	a.cmdMu.Unlock()
	done := make(chan struct{})
	go func() { a.cmdRunning.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		return fmt.Errorf("wait for CNI commands in flight: %w", ctx.Err())
	}
	tick := time.NewTicker(drainQuiet / 6)
	defer tick.Stop()
	for {
		a.reqMu.Lock()
		quiet := a.reqInFlight == 0 && time.Since(a.reqLast) >= drainQuiet
		a.reqMu.Unlock()
		if quiet {
			return nil
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return fmt.Errorf("wait for datastore requests in flight: %w", ctx.Err())
		}
	}
}
