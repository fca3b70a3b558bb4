package node

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/terracenet/terrace/datastore"
	"github.com/terracenet/terrace/datastore/kv"
)

// Two hosts running under one node name would each register the Node with their own addresses,
// program each other's pods' status and advertise each other's blocks: everything that keys on
// the name breaks, quietly. So a daemon holds its name through a leased key
// (datastore.NodeInstanceKey) before it registers, and a second host waits until the first is gone.
const (
	// claimTTL is how long etcd keeps the name after its holder stopped renewing it: the wait a
	// crashed host's successor on another host has to sit out (a restart on the same host does not).
	claimTTL = 20 * time.Second
	// claimPoll is how often a waiting daemon looks again.
	claimPoll = 2 * time.Second
)

// ErrNameTaken says another host holds the node name.
var ErrNameTaken = errors.New("node name held by another host")

// instanceID returns this host's identity for the claim, creating it on first use. Without a state
// directory every start is a new host, so a restart waits for its own old claim to run out.
func instanceID(stateDir string) (string, error) {
	if stateDir != "" {
		file := filepath.Join(stateDir, "instance-id")
		if b, err := os.ReadFile(file); err == nil {
			if id := strings.TrimSpace(string(b)); id != "" {
				return id, nil
			}
		} else if !os.IsNotExist(err) {
			return "", fmt.Errorf("read instance id: %w", err)
		}
		id := newInstanceID()
		if err := writeFileAtomic(file, []byte(id+"\n"), 0o644); err != nil {
			return "", fmt.Errorf("write instance id: %w", err)
		}
		return id, nil
	}
	return newInstanceID(), nil
}

func newInstanceID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b)
}

// nameClaim holds what the daemon writes at its instance key.
type nameClaim struct {
	store *kv.Store
	key   string
	rec   datastore.NodeInstance
	value []byte
	log   *slog.Logger
	ttl   time.Duration            // claimTTL; shorter in tests
	held  atomic.Pointer[kv.Claim] // the claim held last, for release
}

func newNameClaim(store *kv.Store, reg Registration, id string, log *slog.Logger) *nameClaim {
	host, _ := os.Hostname()
	rec := datastore.NodeInstance{ID: id, Hostname: host, PID: os.Getpid(), IPv4: addrOf(reg.IPv4), IPv6: addrOf(reg.IPv6), Since: time.Now().UTC()}
	v, _ := json.Marshal(rec) // strings, an int and a time always encode
	return &nameClaim{store: store, key: datastore.NodeInstanceKey(reg.Name), rec: rec, value: v, log: log, ttl: claimTTL}
}

// mine says whether a held value is this host's: its earlier life, whose lease has not run out.
func (c *nameClaim) mine(held []byte) bool {
	in, err := datastore.ParseNodeInstance(held)
	return err == nil && in.ID == c.rec.ID
}

// try claims the name once. A name held by another host is ErrNameTaken, naming the holder.
func (c *nameClaim) try(ctx context.Context) (*kv.Claim, error) {
	cl, err := c.store.Claim(ctx, c.key, c.value, c.ttl, c.mine)
	var held *kv.HeldError
	if errors.As(err, &held) {
		return nil, fmt.Errorf("claim node name: %w: %s", ErrNameTaken, describeHolder(held.Value))
	}
	if err != nil {
		return nil, err
	}
	c.held.Store(cl)
	return cl, nil
}

// release gives the name up at once, so a successor on another host need not wait for the lease.
func (c *nameClaim) release(log *slog.Logger) {
	cl := c.held.Load()
	if cl == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := cl.Release(ctx); err != nil {
		log.Warn("could not release the node name; it lapses by itself", "key", c.key, "after", c.ttl.String(), "err", err)
	}
}

func describeHolder(v []byte) string {
	in, err := datastore.ParseNodeInstance(v)
	if err != nil {
		return "by a holder whose record cannot be read (" + err.Error() + ")"
	}
	addrs := strings.Trim(in.IPv4+" "+in.IPv6, " ")
	return fmt.Sprintf("host %q (pid %d, addresses %s) since %s", in.Hostname, in.PID, addrs, in.Since.Format(time.RFC3339))
}

// wait claims the name, waiting while another host holds it (saying so on the board and in the
// log) and retrying datastore errors, until it has the name or ctx ends.
func (c *nameClaim) wait(ctx context.Context, board *StatusBoard, endpoints string) (*kv.Claim, error) {
	var lastLog time.Time
	waited := false
	delay := claimPoll
	for {
		cl, err := c.try(ctx)
		if err == nil {
			if waited {
				c.log.Info("node name claimed after waiting", "key", c.key)
				board.SetDatastore("connected", endpoints)
			}
			return cl, nil
		}
		if ctx.Err() != nil {
			return nil, err
		}
		waited = true
		if errors.Is(err, ErrNameTaken) {
			delay = claimPoll
			board.SetDatastore("waiting", fmt.Sprintf("%v; waiting for it to stop (two hosts must not share a node name: give this one another --node-name)", err))
			// Loud at first, then once a minute: a duplicate name is an operator's mistake that
			// stops this host from doing anything.
			if time.Since(lastLog) >= time.Minute {
				c.log.Error("another host runs under this node name; waiting for it to stop before registering", "key", c.key, "err", err)
				lastLog = time.Now()
			}
		} else {
			c.log.Warn("cannot claim the node name; retrying", "key", c.key, "retry_in", delay.String(), "err", err)
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(delay):
		}
		if !errors.Is(err, ErrNameTaken) {
			delay = min(delay*2, 10*time.Second)
		}
	}
}

// keep watches a held claim until ctx ends. When etcd was out of reach for longer than the lease
// the key is gone: keep claims it again, unless another host took the name meanwhile, which ends
// the daemon (an error on errc) rather than run two hosts under one name.
func (c *nameClaim) keep(ctx context.Context, cl *kv.Claim, errc chan<- error) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-cl.Lost():
		}
		c.log.Warn("the hold on the node name lapsed (etcd out of reach longer than the lease); claiming it again", "key", c.key, "lease", c.ttl.String())
		delay := claimPoll
		for {
			next, err := c.try(ctx)
			if err == nil {
				c.log.Info("node name claimed again", "key", c.key)
				cl = next
				break
			}
			if ctx.Err() != nil {
				return
			}
			if errors.Is(err, ErrNameTaken) {
				errc <- fmt.Errorf("hold node name: another host took it while etcd was out of reach: %w", err)
				return
			}
			c.log.Warn("cannot claim the node name again; retrying", "key", c.key, "retry_in", delay.String(), "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(delay):
			}
			delay = min(delay*2, 10*time.Second)
		}
	}
}
