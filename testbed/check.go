package testbed

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Probe names in a matrix and in expectation files.
const (
	ProbeICMP = "icmp"
	ProbeTCP  = "tcp"
)

// Results of a probe.
const (
	Reachable = "reachable"
	Blocked   = "blocked"
)

// DefaultCheckPort is the TCP port the check listens on inside each pod.
const DefaultCheckPort = 7777

// CheckOptions tune Check.
type CheckOptions struct {
	Port    int           // TCP port probed in every pod (a listener is opened there during the check)
	Timeout time.Duration // per probe
	Expect  *Expectation  // nil: every pair is expected reachable
	// Settle, when positive, re-probes while any probe differs from the expectation, until all agree
	// or this much time has passed: routes and policy take a moment to converge after a change.
	Settle time.Duration
}

// Cell is one probe from one pod to another.
type Cell struct {
	From     string `json:"from"`
	To       string `json:"to"`
	Addr     string `json:"addr"`
	Probe    string `json:"probe"`
	Expected string `json:"expected"`
	Actual   string `json:"actual"`
	Detail   string `json:"detail,omitempty"`
}

// OK reports whether the cell matches its expectation.
func (c Cell) OK() bool { return c.Expected == c.Actual }

// Matrix is the result of Check.
type Matrix struct {
	Port  int    `json:"port"`
	Cells []Cell `json:"cells"`
}

// Differences counts the cells that do not match their expectation.
func (m *Matrix) Differences() int {
	n := 0
	for _, c := range m.Cells {
		if !c.OK() {
			n++
		}
	}
	return n
}

// Check probes from every pod to every other pod: ICMP echo and a TCP connect to a listener the
// check itself opens inside each pod (or whatever already listens on that port there).
func (tb *Testbed) Check(ctx context.Context, o CheckOptions) (*Matrix, error) {
	if o.Port == 0 {
		o.Port = DefaultCheckPort
	}
	if o.Timeout == 0 {
		o.Timeout = time.Second
	}
	pods := tb.Pods()
	var closers []net.Listener
	defer func() {
		for _, l := range closers {
			l.Close()
		}
	}()
	for _, p := range pods {
		ls, err := listenInPod(p, o.Port)
		if err != nil {
			return nil, err
		}
		closers = append(closers, ls...)
	}
	// Each pod must answer on the port itself (over its own loopback, which no policy sees):
	// otherwise a refused probe, counted as blocked, could pass a "blocked" expectation with no
	// policy in place.
	for _, p := range pods {
		for _, a := range []string{p.IPv4, p.IPv6} {
			if a == "" {
				continue
			}
			if err := dialInNS(ctx, filepath.Join(netnsDir, p.NS), net.JoinHostPort(a, strconv.Itoa(o.Port)), o.Timeout); err != nil {
				return nil, fmt.Errorf("check: pod %s/%s does not accept TCP on %s port %d from itself, so its probes would mean nothing: %w",
					p.Host, p.Name, a, o.Port, err)
			}
		}
	}
	m := &Matrix{Port: o.Port}
	for _, src := range pods {
		for _, dst := range pods {
			if src.Host == dst.Host && src.Name == dst.Name {
				continue
			}
			for _, a := range []string{dst.IPv4, dst.IPv6} {
				if a == "" {
					continue
				}
				for _, probe := range []string{ProbeICMP, ProbeTCP} {
					from, to := src.Host+"/"+src.Name, dst.Host+"/"+dst.Name
					m.Cells = append(m.Cells, Cell{From: from, To: to, Addr: a, Probe: probe,
						Expected: o.Expect.Lookup(from, to, probe)})
				}
			}
		}
	}
	nsOf := map[string]string{}
	for _, p := range pods {
		nsOf[p.Host+"/"+p.Name] = filepath.Join(netnsDir, p.NS)
	}
	deadline := time.Now().Add(o.Settle)
	for {
		probeAll(ctx, m.Cells, nsOf, o)
		if m.Differences() == 0 || !time.Now().Before(deadline) || ctx.Err() != nil {
			return m, ctx.Err()
		}
		select {
		case <-ctx.Done():
			return m, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// probeAll runs every probe once, in parallel: a blocked one costs its whole timeout.
func probeAll(ctx context.Context, cells []Cell, nsOf map[string]string, o CheckOptions) {
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	for i := range cells {
		c := &cells[i]
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			var err error
			if c.Probe == ProbeICMP {
				err = pingInNS(ctx, nsOf[c.From], c.Addr, o.Timeout)
			} else {
				err = dialInNS(ctx, nsOf[c.From], net.JoinHostPort(c.Addr, strconv.Itoa(o.Port)), o.Timeout)
			}
			c.Actual, c.Detail = Reachable, ""
			if err != nil {
				c.Actual, c.Detail = Blocked, err.Error()
			}
		}()
	}
	wg.Wait()
}

// listenInPod opens the check's TCP listener inside a pod; a port already taken means some other
// listener serves it, which is just as good for a reachability probe.
func listenInPod(p PodState, port int) ([]net.Listener, error) {
	var out []net.Listener
	err := inNetNS(filepath.Join(netnsDir, p.NS), func() error {
		l, err := net.Listen("tcp", net.JoinHostPort("::", strconv.Itoa(port)))
		if err != nil {
			l, err = net.Listen("tcp4", net.JoinHostPort("0.0.0.0", strconv.Itoa(port)))
		}
		if errors.Is(err, syscall.EADDRINUSE) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("listen in %s/%s: %w", p.Host, p.Name, err)
		}
		out = append(out, l)
		return nil
	})
	for _, l := range out {
		go serve(l)
	}
	return out, err
}

// serve accepts and closes: a completed handshake is all a probe needs.
func serve(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		c.Close()
	}
}

// Listen serves a TCP port until ctx ends (the hidden `listen` command runs it inside a pod).
func Listen(ctx context.Context, port int) error {
	l, err := net.Listen("tcp", net.JoinHostPort("::", strconv.Itoa(port)))
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	go func() { <-ctx.Done(); l.Close() }()
	serve(l)
	return nil
}

func dialInNS(ctx context.Context, nsPath, addr string, timeout time.Duration) error {
	return inNetNS(nsPath, func() error {
		d := net.Dialer{Timeout: timeout}
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return err
		}
		return c.Close()
	})
}

// pingInNS sends one ICMP echo from inside a namespace over a raw socket (no ping binary needed)
// and waits for the matching reply.
func pingInNS(ctx context.Context, nsPath, addr string, timeout time.Duration) error {
	ip := net.ParseIP(addr)
	if ip == nil {
		return fmt.Errorf("ping %q: not an address", addr)
	}
	v4 := ip.To4() != nil
	var conn net.PacketConn
	err := inNetNS(nsPath, func() error {
		var err error
		if v4 {
			conn, err = net.ListenPacket("ip4:icmp", "0.0.0.0")
		} else {
			conn, err = net.ListenPacket("ip6:ipv6-icmp", "::")
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("open icmp socket: %w", err)
	}
	defer conn.Close()
	id := uint16(pingID.Add(1)) ^ uint16(syscall.Getpid())
	msg := make([]byte, 16)
	msg[0] = 8 // echo request
	if !v4 {
		msg[0] = 128
	}
	binary.BigEndian.PutUint16(msg[4:], id)
	binary.BigEndian.PutUint16(msg[6:], 1)
	copy(msg[8:], "terrace!")
	if v4 {
		binary.BigEndian.PutUint16(msg[2:], icmpChecksum(msg))
	} // the kernel fills in the ICMPv6 checksum
	deadline := time.Now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = conn.SetDeadline(deadline)
	if _, err := conn.WriteTo(msg, &net.IPAddr{IP: ip}); err != nil {
		return fmt.Errorf("send echo: %w", err)
	}
	buf := make([]byte, 1500)
	for {
		n, from, err := conn.ReadFrom(buf)
		if err != nil {
			return fmt.Errorf("no echo reply: %w", err)
		}
		reply := byte(0)
		if !v4 {
			reply = 129
		}
		if n >= 8 && buf[0] == reply && binary.BigEndian.Uint16(buf[4:]) == id &&
			from.(*net.IPAddr).IP.Equal(ip) {
			return nil
		}
		// An error about our own echo quotes its IP header (20 or 40 bytes) and our ICMP header.
		hdr := 20
		if !v4 {
			hdr = 40
		}
		if ((v4 && buf[0] == 3) || (!v4 && buf[0] == 1)) && n >= 8+hdr+8 &&
			binary.BigEndian.Uint16(buf[8+hdr+4:]) == id {
			return errors.New("destination unreachable")
		}
	}
}

var pingID atomic.Uint32

func icmpChecksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// Expectation says which probes should succeed. It is a list of rules, later rules winning:
//
//	# FROM  TO  PROBE  RESULT
//	*       *       *    reachable
//	*       */be-*  *    blocked
//	*/fe-*  */be-*  tcp  reachable
//
// FROM and TO are HOST/POD patterns (path.Match globs; a lone * matches every pod), PROBE is icmp,
// tcp or *, RESULT is reachable or blocked. Pairs no rule matches are expected reachable.
type Expectation struct {
	Rules []ExpectRule
}

// ExpectRule is one line of an expectation.
type ExpectRule struct {
	From, To, Probe, Result string
}

// ParseExpectation parses the expectation format; errors name the line.
func ParseExpectation(text string) (*Expectation, error) {
	e := &Expectation{}
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	line := 0
	for sc.Scan() {
		line++
		s, _, _ := strings.Cut(sc.Text(), "#")
		f := strings.Fields(s)
		if len(f) == 0 {
			continue
		}
		bad := func(why string) (*Expectation, error) {
			return nil, fmt.Errorf("parse expectation line %d: %w: %s", line, ErrInvalid, why)
		}
		if len(f) != 4 {
			return bad("want FROM TO PROBE RESULT")
		}
		for _, pat := range f[:2] {
			if _, err := path.Match(pat, "x/y"); err != nil {
				return bad(fmt.Sprintf("bad pattern %q", pat))
			}
		}
		switch f[2] {
		case ProbeICMP, ProbeTCP, "*":
		default:
			return bad(fmt.Sprintf("probe %q is not icmp, tcp or *", f[2]))
		}
		switch f[3] {
		case Reachable, Blocked:
		default:
			return bad(fmt.Sprintf("result %q is not reachable or blocked", f[3]))
		}
		e.Rules = append(e.Rules, ExpectRule{From: f[0], To: f[1], Probe: f[2], Result: f[3]})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("parse expectation: %w: %w", ErrInvalid, err)
	}
	return e, nil
}

func patMatch(pat, s string) bool {
	if pat == "*" {
		return true
	}
	ok, _ := path.Match(pat, s)
	return ok
}

// Lookup returns the expected result of one probe (nil expectation: reachable).
func (e *Expectation) Lookup(from, to, probe string) string {
	res := Reachable
	if e == nil {
		return res
	}
	for _, r := range e.Rules {
		if patMatch(r.From, from) && patMatch(r.To, to) && (r.Probe == "*" || r.Probe == probe) {
			res = r.Result
		}
	}
	return res
}
