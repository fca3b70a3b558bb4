package shim

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/terracenet/terrace/node/nodeapi"
)

// The agent is asked with one HTTP/1.0 request on a fresh connection, written and read by hand:
// net/http costs every plugin process milliseconds of start-up (TLS, HTTP/2 tables) for a call
// that needs none of it. HTTP/1.0 makes the agent's server close the connection after its answer
// and never use chunked encoding, so an answer is a status line, headers and the bytes up to EOF.

// DialTimeout bounds the connection to the agent: one that does not accept at once is not there.
const DialTimeout = time.Second

// maxAnswer bounds an answer; a CNI result is a few kilobytes.
const maxAnswer = 4 << 20

// NotTaken says why the agent did not take a command, and whether it may still serve the
// datastore calls (it answered, but runs no commands).
type NotTaken struct {
	Reason      string
	AgentUsable bool
}

// Forward hands one command to the agent at socket. taken is false when the agent did not take
// it (why says why): nothing listens, it is not ready or stopping, it serves another node, or it
// refused the request before doing anything (4xx: too old to run commands, a request it does not
// understand, a namespace it cannot see); nothing has been changed then. When taken, the command's outcome is result (on
// success, what the plugin prints) or err, a *types.Error: the command's own CNI error, or "try
// again later" when the answer was lost, since the command may be half done (the runtime's DEL
// cleans up).
func Forward(ctx context.Context, socket string, req nodeapi.CNIRequest) (result []byte, taken bool, why NotTaken, err error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, true, why, types.NewError(types.ErrInternal, fmt.Sprintf("encode the command for the node agent: %v", err), "")
	}
	status, data, dialled, err := post(ctx, socket, "/v1/cni", body)
	if !dialled {
		return nil, false, NotTaken{Reason: err.Error()}, nil
	}
	if err != nil {
		return nil, true, why, types.NewError(types.ErrTryAgainLater, fmt.Sprintf("node agent at %s: %v (the command may be partly done; DEL cleans up)", socket, err), "")
	}
	if status != 200 {
		var ae nodeapi.APIError
		_ = json.Unmarshal(data, &ae)
		reason := fmt.Sprintf("status %d %s: %s", status, ae.Code, ae.Message)
		switch {
		case status == 503, ae.Code == nodeapi.CodeWrongNode:
			// Not ready, stopping, or another node's: not worth asking again.
			return nil, false, NotTaken{Reason: reason}, nil
		case status >= 400 && status < 500:
			// Refused before anything was done (no command runner in an older agent, a request
			// it does not understand, a namespace it cannot see): it may still serve the
			// datastore calls.
			return nil, false, NotTaken{Reason: reason, AgentUsable: true}, nil
		}
		return nil, true, why, types.NewError(types.ErrInternal, fmt.Sprintf("node agent failed the command: %s (status %d)", ae.Message, status), "")
	}
	var out nodeapi.CNIResponse
	if err := json.Unmarshal(data, &out); err != nil {
		return nil, true, why, types.NewError(types.ErrInternal, fmt.Sprintf("decode the node agent's answer: %v", err), "")
	}
	if out.Error != nil {
		return nil, true, why, &types.Error{Code: out.Error.Code, Msg: out.Error.Msg, Details: out.Error.Details}
	}
	return out.Result, true, why, nil
}

// post sends body to path and returns the answer's status and body. dialled tells whether the
// connection was made, so a caller can tell "nobody there" from "the answer was lost".
func post(ctx context.Context, socket, path string, body []byte) (status int, answer []byte, dialled bool, err error) {
	d := net.Dialer{Timeout: DialTimeout}
	c, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return 0, nil, false, fmt.Errorf("connect to %s: %w", socket, err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	var buf bytes.Buffer
	fmt.Fprintf(&buf, "POST %s HTTP/1.0\r\nHost: terrace-node\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", path, len(body))
	buf.Write(body)
	if _, err := c.Write(buf.Bytes()); err != nil {
		return 0, nil, true, fmt.Errorf("send request: %w", err)
	}
	raw, err := io.ReadAll(io.LimitReader(c, maxAnswer+1))
	if err != nil {
		return 0, nil, true, fmt.Errorf("read answer: %w", err)
	}
	if len(raw) > maxAnswer {
		return 0, nil, true, fmt.Errorf("read answer: longer than %d bytes", maxAnswer)
	}
	status, answer, err = parseResponse(raw)
	return status, answer, true, err
}

// parseResponse splits a whole HTTP/1.x answer into its status and body. With a Content-Length
// the body must be exactly that long (a shorter one is an answer cut off).
func parseResponse(raw []byte) (status int, body []byte, err error) {
	head, body, ok := bytes.Cut(raw, []byte("\r\n\r\n"))
	if !ok {
		return 0, nil, errors.New("parse answer: no end of headers")
	}
	lines := bytes.Split(head, []byte("\r\n"))
	proto, rest, _ := bytes.Cut(lines[0], []byte(" "))
	if !bytes.HasPrefix(proto, []byte("HTTP/1.")) || len(proto) != len("HTTP/1.0") {
		return 0, nil, fmt.Errorf("parse answer: status line %q is not HTTP/1.x", truncate(lines[0]))
	}
	code, _, _ := bytes.Cut(rest, []byte(" "))
	status, err = strconv.Atoi(string(code))
	if err != nil || len(code) != 3 || status < 100 {
		return 0, nil, fmt.Errorf("parse answer: bad status code in %q", truncate(lines[0]))
	}
	for _, l := range lines[1:] {
		name, value, ok := bytes.Cut(l, []byte(":"))
		if !ok {
			return 0, nil, fmt.Errorf("parse answer: header line %q has no colon", truncate(l))
		}
		if !bytes.EqualFold(bytes.TrimSpace(name), []byte("Content-Length")) {
			continue
		}
		n, err := strconv.Atoi(string(bytes.TrimSpace(value)))
		if err != nil || n < 0 {
			return 0, nil, fmt.Errorf("parse answer: bad Content-Length %q", truncate(value))
		}
		if n != len(body) {
			return 0, nil, fmt.Errorf("parse answer: body is %d bytes, Content-Length says %d", len(body), n)
		}
	}
	return status, body, nil
}

func truncate(b []byte) string {
	if len(b) > 64 {
		return string(b[:64]) + "..."
	}
	return string(b)
}
