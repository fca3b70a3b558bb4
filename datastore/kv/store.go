package kv

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/terracenet/terrace/datastore/internal/zapslog"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// listPage bounds one range response so a large prefix never needs one huge gRPC message.
const listPage = 2000

// Store is a connection to etcd.
type Store struct {
	cli *clientv3.Client
	cfg Config
	log *slog.Logger
}

// Open connects to etcd and checks it answers.
// ErrTLSConfig marks an Open that failed on its TLS files (missing, unreadable, not PEM, cert and
// key not a pair): a configuration error, not an etcd that does not answer.
var ErrTLSConfig = errors.New("TLS configuration")

func Open(ctx context.Context, cfg Config, log *slog.Logger) (*Store, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if len(cfg.Endpoints) == 0 {
		return nil, errors.New("open etcd: no endpoints given")
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = 5 * time.Second
	}
	if cfg.RequestTimeout == 0 {
		cfg.RequestTimeout = 10 * time.Second
	}
	tlsCfg, err := tlsConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("open etcd: %w: %w", ErrTLSConfig, err)
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   cfg.Endpoints,
		DialTimeout: cfg.DialTimeout,
		TLS:         tlsCfg,
		Username:    cfg.Username,
		Password:    cfg.Password,
		Logger:      zapslog.New(log, "etcd-client"),
		// Keepalives let a watch notice a dead connection instead of waiting on TCP timeouts.
		DialKeepAliveTime:    10 * time.Second,
		DialKeepAliveTimeout: 5 * time.Second,
		Context:              context.Background(),
	})
	if err != nil {
		return nil, fmt.Errorf("open etcd %s: %w", strings.Join(cfg.Endpoints, ","), err)
	}
	s := &Store{cli: cli, cfg: cfg, log: log}
	if err := s.ping(ctx); err != nil {
		cli.Close()
		return nil, fmt.Errorf("open etcd %s: %w", strings.Join(cfg.Endpoints, ","), err)
	}
	return s, nil
}

// Ping says whether etcd answers now (within the dial timeout, or ctx's if shorter).
func (s *Store) Ping(ctx context.Context) error { return s.ping(ctx) }

// ping asks every endpoint for its status at once and is done at the first answer: Status needs
// authentication but no key permission, so it checks credentials without assuming what the user
// may read, and asking all at once keeps a member that is down from using up the time while
// another would answer.
func (s *Store) ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.DialTimeout)
	defer cancel()
	results := make(chan error, len(s.cfg.Endpoints))
	for _, ep := range s.cfg.Endpoints {
		go func() {
			if _, err := s.cli.Status(ctx, ep); err != nil {
				results <- fmt.Errorf("%s: %w", ep, err)
				return
			}
			results <- nil
		}()
	}
	var errs []error
	for range s.cfg.Endpoints {
		err := <-results
		if err == nil {
			return nil
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func tlsConfig(cfg Config) (*tls.Config, error) {
	https := false
	for _, ep := range cfg.Endpoints {
		if strings.HasPrefix(ep, "https://") {
			https = true
		}
	}
	if cfg.CAFile == "" && cfg.CertFile == "" && cfg.KeyFile == "" && !https {
		return nil, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("read CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("read CA file %s: no PEM certificates", cfg.CAFile)
		}
		tc.RootCAs = pool
	}
	if (cfg.CertFile == "") != (cfg.KeyFile == "") {
		return nil, errors.New("load client certificate: cert and key files must be given together")
	}
	if cfg.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("load client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// Client exposes the underlying client for the few callers that need etcd features directly.
func (s *Store) Client() *clientv3.Client { return s.cli }

// Close closes the connection.
func (s *Store) Close() error { return s.cli.Close() }

// reqCtx bounds a call by RequestTimeout unless the caller already set a deadline.
func (s *Store) reqCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, s.cfg.RequestTimeout)
}

func fromPB(kv *mvccpb.KeyValue) KV {
	return KV{Key: string(kv.Key), Value: kv.Value, Revision: kv.ModRevision, CreateRevision: kv.CreateRevision}
}

// Get returns one key, or ErrNotFound.
func (s *Store) Get(ctx context.Context, key string) (KV, error) {
	ctx, cancel := s.reqCtx(ctx)
	defer cancel()
	resp, err := s.cli.Get(ctx, key)
	if err != nil {
		return KV{}, fmt.Errorf("get %s: %w", key, err)
	}
	if len(resp.Kvs) == 0 {
		return KV{}, fmt.Errorf("get %s: %w", key, ErrNotFound)
	}
	return fromPB(resp.Kvs[0]), nil
}

// List returns every key under prefix, sorted by key, and the store revision it read at.
func (s *Store) List(ctx context.Context, prefix string) ([]KV, int64, error) {
	ctx, cancel := s.reqCtx(ctx)
	defer cancel()
	kvs, rev, err := s.listAt(ctx, prefix, 0)
	if err != nil {
		return nil, 0, fmt.Errorf("list %s: %w", prefix, err)
	}
	return kvs, rev, nil
}

// listAt reads prefix in pages, all at one revision (rev 0: the current one) so the result is a
// consistent snapshot even while others write.
func (s *Store) listAt(ctx context.Context, prefix string, rev int64) ([]KV, int64, error) {
	end := clientv3.GetPrefixRangeEnd(prefix)
	if prefix == "" {
		prefix, end = "\x00", "\x00"
	}
	var out []KV
	start := prefix
	for {
		opts := []clientv3.OpOption{
			clientv3.WithRange(end),
			clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend),
			clientv3.WithLimit(listPage),
		}
		if rev > 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		resp, err := s.cli.Get(ctx, start, opts...)
		if err != nil {
			return nil, 0, err
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		if out == nil {
			out = make([]KV, 0, resp.Count)
		}
		for _, kv := range resp.Kvs {
			out = append(out, fromPB(kv))
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return out, rev, nil
		}
		start = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// Create writes key only if absent (ErrExists otherwise) and returns the new revision.
func (s *Store) Create(ctx context.Context, key string, value []byte) (int64, error) {
	ctx, cancel := s.reqCtx(ctx)
	defer cancel()
	resp, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, string(value))).
		Commit()
	if err != nil {
		return 0, fmt.Errorf("create %s: %w", key, err)
	}
	if !resp.Succeeded {
		return 0, fmt.Errorf("create %s: %w", key, ErrExists)
	}
	return resp.Header.Revision, nil
}

// Update writes key only if its mod revision is rev (ErrConflict otherwise, ErrNotFound if absent).
func (s *Store) Update(ctx context.Context, key string, value []byte, rev int64) (int64, error) {
	if rev <= 0 {
		return 0, fmt.Errorf("update %s: revision %d is not a stored revision: %w", key, rev, ErrConflict)
	}
	ctx, cancel := s.reqCtx(ctx)
	defer cancel()
	resp, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).
		Then(clientv3.OpPut(key, string(value))).
		Else(clientv3.OpGet(key, clientv3.WithKeysOnly())).
		Commit()
	if err != nil {
		return 0, fmt.Errorf("update %s: %w", key, err)
	}
	if !resp.Succeeded {
		return 0, fmt.Errorf("update %s: %w", key, conflictOrMissing(resp, 0, rev))
	}
	return resp.Header.Revision, nil
}

// conflictOrMissing reads the Else branch's Get at index i to tell a vanished key from a changed one.
func conflictOrMissing(resp *clientv3.TxnResponse, i int, want int64) error {
	if i < len(resp.Responses) {
		if r := resp.Responses[i].GetResponseRange(); r != nil && len(r.Kvs) == 0 {
			return ErrNotFound
		} else if r != nil {
			return fmt.Errorf("at revision %d, not %d: %w", r.Kvs[0].ModRevision, want, ErrConflict)
		}
	}
	return ErrConflict
}

// Put writes key unconditionally.
func (s *Store) Put(ctx context.Context, key string, value []byte) (int64, error) {
	ctx, cancel := s.reqCtx(ctx)
	defer cancel()
	resp, err := s.cli.Put(ctx, key, string(value))
	if err != nil {
		return 0, fmt.Errorf("put %s: %w", key, err)
	}
	return resp.Header.Revision, nil
}

// Delete removes key; rev 0 deletes unconditionally, otherwise the mod revision must match.
// Returns what was deleted; ErrNotFound if absent.
func (s *Store) Delete(ctx context.Context, key string, rev int64) (KV, error) {
	ctx, cancel := s.reqCtx(ctx)
	defer cancel()
	if rev == 0 {
		resp, err := s.cli.Delete(ctx, key, clientv3.WithPrevKV())
		if err != nil {
			return KV{}, fmt.Errorf("delete %s: %w", key, err)
		}
		if len(resp.PrevKvs) == 0 {
			return KV{}, fmt.Errorf("delete %s: %w", key, ErrNotFound)
		}
		return fromPB(resp.PrevKvs[0]), nil
	}
	resp, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).
		Then(clientv3.OpDelete(key, clientv3.WithPrevKV())).
		Else(clientv3.OpGet(key, clientv3.WithKeysOnly())).
		Commit()
	if err != nil {
		return KV{}, fmt.Errorf("delete %s: %w", key, err)
	}
	if !resp.Succeeded {
		return KV{}, fmt.Errorf("delete %s: %w", key, conflictOrMissing(resp, 0, rev))
	}
	d := resp.Responses[0].GetResponseDeleteRange()
	if d == nil || len(d.PrevKvs) == 0 {
		return KV{}, fmt.Errorf("delete %s: %w", key, ErrNotFound)
	}
	return fromPB(d.PrevKvs[0]), nil
}

// Commit applies ops all-or-nothing; if any condition fails nothing is written and the error is
// ErrConflict (wrapped, naming the first failing key). It returns the revision of the write.
func (s *Store) Commit(ctx context.Context, ops ...Op) (int64, error) {
	var (
		cmps  []clientv3.Cmp
		thens []clientv3.Op
		elses []clientv3.Op
	)
	for _, op := range ops {
		switch op.Kind {
		case OpCreate:
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(op.Key), "=", 0))
			thens = append(thens, clientv3.OpPut(op.Key, string(op.Value)))
		case OpUpdate:
			if op.Rev <= 0 {
				return 0, fmt.Errorf("commit: update %s: revision %d is not a stored revision: %w", op.Key, op.Rev, ErrConflict)
			}
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(op.Key), "=", op.Rev))
			thens = append(thens, clientv3.OpPut(op.Key, string(op.Value)))
		case OpDelete:
			if op.Rev != 0 {
				cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(op.Key), "=", op.Rev))
			}
			thens = append(thens, clientv3.OpDelete(op.Key))
		case OpCheck:
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(op.Key), "=", op.Rev))
		case OpPut:
			thens = append(thens, clientv3.OpPut(op.Key, string(op.Value)))
		case OpCheckPrefix:
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(op.Key), "<", op.Rev+1).WithPrefix())
			// Only the newest key under the prefix is needed to name the failure.
			elses = append(elses, clientv3.OpGet(op.Key, clientv3.WithPrefix(), clientv3.WithKeysOnly(),
				clientv3.WithSort(clientv3.SortByModRevision, clientv3.SortDescend), clientv3.WithLimit(1)))
			continue
		default:
			return 0, fmt.Errorf("commit: unknown op kind %d for %s", op.Kind, op.Key)
		}
		elses = append(elses, clientv3.OpGet(op.Key, clientv3.WithKeysOnly()))
	}
	ctx, cancel := s.reqCtx(ctx)
	defer cancel()
	resp, err := s.cli.Txn(ctx).If(cmps...).Then(thens...).Else(elses...).Commit()
	if err != nil {
		return 0, fmt.Errorf("commit %d ops: %w", len(ops), err)
	}
	if !resp.Succeeded {
		return 0, firstFailure(ops, resp)
	}
	return resp.Header.Revision, nil
}

// firstFailure names the first op whose condition did not hold, from the Else branch's reads.
func firstFailure(ops []Op, resp *clientv3.TxnResponse) error {
	for i, op := range ops {
		var (
			have   int64
			haveAt = op.Key
		)
		if i < len(resp.Responses) {
			if r := resp.Responses[i].GetResponseRange(); r != nil && len(r.Kvs) > 0 {
				have, haveAt = r.Kvs[0].ModRevision, string(r.Kvs[0].Key)
			}
		}
		var failed bool
		switch op.Kind {
		case OpCreate:
			failed = have != 0
		case OpUpdate, OpCheck:
			failed = have != op.Rev
		case OpDelete:
			failed = op.Rev != 0 && have != op.Rev
		case OpCheckPrefix:
			if have > op.Rev {
				return fmt.Errorf("commit: %s under %s changed at revision %d, after %d: %w", haveAt, op.Key, have, op.Rev, ErrConflict)
			}
		}
		if failed {
			return fmt.Errorf("commit: %s at revision %d, wanted %d: %w", op.Key, have, wantRev(op), ErrConflict)
		}
	}
	return fmt.Errorf("commit: condition failed: %w", ErrConflict)
}

func wantRev(op Op) int64 {
	if op.Kind == OpCreate {
		return 0
	}
	return op.Rev
}
