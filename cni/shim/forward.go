package shim

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/terracenet/terrace/node/nodeapi"
)

// The agent is asked with one HTTP/1.0 request on a fresh connection, written and read by hand:
// net/http, and even package net, cost every plugin process start-up time for a call that needs
// none of what they offer. HTTP/1.0 makes the agent's server close the connection after its answer
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

// Forward hands one command to the agent at socket, waiting for it until deadline. taken is false
// when the agent did not take it (why says why): nothing listens, it is not ready or stopping, it
// serves another node, or it refused the request before doing anything (4xx: too old to run
// commands, a request it does not understand, a namespace it cannot see); nothing has been changed
// then. When taken, the command's outcome is result (on success, what the plugin prints) or err:
// the command's own CNI error, or "try again later" when the answer was lost, since the command
// may be half done (the runtime's DEL cleans up).
func Forward(deadline time.Time, socket string, req nodeapi.CNIRequest) (result []byte, taken bool, why NotTaken, err *nodeapi.CNIError) {
	body, jerr := json.Marshal(req)
	if jerr != nil {
		return nil, true, why, &nodeapi.CNIError{Code: ErrInternal, Msg: "encode the command for the node agent: " + jerr.Error()}
	}
	status, data, dialled, perr := post(deadline, socket, "/v1/cni", body)
	if !dialled {
		return nil, false, NotTaken{Reason: perr.Error()}, nil
	}
	if perr != nil {
		return nil, true, why, &nodeapi.CNIError{Code: ErrTryAgainLater, Msg: "node agent at " + socket + ": " + perr.Error() + " (the command may be partly done; DEL cleans up)"}
	}
	if status != 200 {
		var ae nodeapi.APIError
		_ = json.Unmarshal(data, &ae)
		reason := "status " + strconv.Itoa(status) + " " + ae.Code + ": " + ae.Message
		switch {
		case status == 503, ae.Code == nodeapi.CodeWrongNode, ae.Code == nodeapi.CodeForbidden:
			// Not ready, stopping, another node's, or a caller it does not let change state
			// (not root): not worth asking again.
			return nil, false, NotTaken{Reason: reason}, nil
		case status >= 400 && status < 500:
			// Refused before anything was done (no command runner in an older agent, a request
			// it does not understand, a namespace it cannot see): it may still serve the
			// datastore calls.
			return nil, false, NotTaken{Reason: reason, AgentUsable: true}, nil
		}
		// The agent took the command and failed outside it, or its answer is not one: the
		// outcome is unknown, which the spec's "try again later" says (DEL cleans up).
		return nil, true, why, &nodeapi.CNIError{Code: ErrTryAgainLater, Msg: "node agent failed the command: " + ae.Message + " (status " + strconv.Itoa(status) + "; the command may be partly done)"}
	}
	var out nodeapi.CNIResponse
	if jerr := json.Unmarshal(data, &out); jerr != nil {
		// An answer cut off (the agent died while writing it; answers over 2 KB carry no
		// length) reads as undecodable: the command's outcome is unknown.
		return nil, true, why, &nodeapi.CNIError{Code: ErrTryAgainLater, Msg: "decode the node agent's answer: " + jerr.Error() + " (the command may be partly done)"}
	}
	if out.Error != nil {
		return nil, true, why, out.Error
	}
	return out.Result, true, why, nil
}

// post sends body to path and returns the answer's status and body. dialled tells whether the
// request reached the agent whole, so a caller can tell "not sent" from "the answer was lost".
func post(deadline time.Time, socket, path string, body []byte) (status int, answer []byte, dialled bool, err error) {
	dialBy := time.Now().Add(DialTimeout)
	if deadline.Before(dialBy) {
		dialBy = deadline
	}
	c, err := dial(socket, dialBy)
	if err != nil {
		return 0, nil, false, err
	}
	defer c.Close()
	if err := c.SetDeadline(deadline); err != nil {
		return 0, nil, true, errors.New("set a deadline: " + err.Error())
	}
	msg := make([]byte, 0, len(body)+128)
	msg = append(msg, "POST "+path+" HTTP/1.0\r\nHost: terrace-node\r\nContent-Type: application/json\r\nContent-Length: "+strconv.Itoa(len(body))+"\r\n\r\n"...)
	msg = append(msg, body...)
	if _, err := c.Write(msg); err != nil {
		// The agent decodes the whole request before it acts on it, so one not written whole
		// was not started: the fallback may do it (an agent that refused an oversized request
		// and closed gives a broken pipe here).
		return 0, nil, false, errors.New("send request: " + err.Error())
	}
	raw, err := io.ReadAll(io.LimitReader(c, maxAnswer+1))
	if err != nil {
		return 0, nil, true, errors.New("read answer: " + err.Error())
	}
	if len(raw) > maxAnswer {
		return 0, nil, true, errors.New("read answer: longer than " + strconv.Itoa(maxAnswer) + " bytes")
	}
	status, answer, err = parseResponse(raw)
	return status, answer, true, err
}

// dial connects a stream socket to the unix socket at path. The socket is non-blocking, so the
// file the runtime's poller serves honours deadlines; a listener whose queue is full refuses at
// once (EAGAIN) rather than make the plugin wait, which counts as nobody there.
func dial(path string, deadline time.Time) (*os.File, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, errors.New("connect to " + path + ": socket: " + err.Error())
	}
	err = unix.Connect(fd, &unix.SockaddrUnix{Name: path})
	for err == unix.EINTR && time.Now().Before(deadline) {
		err = unix.Connect(fd, &unix.SockaddrUnix{Name: path})
	}
	if err != nil {
		unix.Close(fd)
		return nil, errors.New("connect to " + path + ": " + err.Error())
	}
	return os.NewFile(uintptr(fd), path), nil
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
		return 0, nil, errors.New("parse answer: status line " + strconv.Quote(truncate(lines[0])) + " is not HTTP/1.x")
	}
	code, _, _ := bytes.Cut(rest, []byte(" "))
	status, err = strconv.Atoi(string(code))
	if err != nil || len(code) != 3 || status < 100 {
		return 0, nil, errors.New("parse answer: bad status code in " + strconv.Quote(truncate(lines[0])))
	}
	for _, l := range lines[1:] {
		name, value, ok := bytes.Cut(l, []byte(":"))
		if !ok {
			return 0, nil, errors.New("parse answer: header line " + strconv.Quote(truncate(l)) + " has no colon")
		}
		if !bytes.EqualFold(bytes.TrimSpace(name), []byte("Content-Length")) {
			continue
		}
		n, err := strconv.Atoi(string(bytes.TrimSpace(value)))
		if err != nil || n < 0 {
			return 0, nil, errors.New("parse answer: bad Content-Length " + strconv.Quote(truncate(value)))
		}
		if n != len(body) {
			return 0, nil, errors.New("parse answer: body is " + strconv.Itoa(len(body)) + " bytes, Content-Length says " + strconv.Itoa(n))
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
