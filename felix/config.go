package felix

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/terracenet/terrace/datastore"
	"github.com/terracenet/terrace/datastore/api"
	"github.com/terracenet/terrace/datastore/kv"
)

// Defaults of Config.
const (
	DefaultApplyInterval = 20 * time.Millisecond
	DefaultRetryMin      = 200 * time.Millisecond
	DefaultRetryMax      = 30 * time.Second
	DefaultPendingPoll   = time.Second
	DefaultHealthListen  = "127.0.0.1:9099"
	DefaultMetricsListen = "127.0.0.1:9091"
)

// Kinds are the resource kinds felix watches.
var Kinds = []string{
	api.KindWorkloadEndpoint, api.KindHostEndpoint, api.KindNetworkPolicy, api.KindGlobalNetworkPolicy,
	api.KindNetworkSet, api.KindGlobalNetworkSet, api.KindIPPool, api.KindFelixConfiguration,
}

// StatusStore is the slice of *kv.Store the agent writes endpoint status through.
type StatusStore interface {
	List(ctx context.Context, prefix string) ([]kv.KV, int64, error)
	Commit(ctx context.Context, ops ...kv.Op) (int64, error)
}

// Config tunes an Agent; zero values pick the defaults.
type Config struct {
	NodeName string
	// Client, when set, makes Run watch felix's kinds and this node's IPAM affinities itself and
	// report endpoint status through Client.Store(). Without it the caller feeds
	// ResourceCallbacks and BlockCallbacks (tests).
	Client *datastore.Client
	// Status overrides where endpoint status is written (default Client.Store(); nil and no
	// Client: no status reporting).
	Status StatusStore
	// WaitForBlocks holds the first apply until BlockCallbacks reported in-sync too (always so
	// with Client), so this node's blackholes are never missing from a complete view.
	WaitForBlocks bool

	// ApplyInterval is the least time between two applies while updates keep coming: a burst
	// of updates is computed as it arrives and programmed in one go.
	ApplyInterval time.Duration
	// Refresh says how often the iptables tables, the ipsets and the routes (with the interface
	// settings) each re-read the kernel and repair drift; a zero field is its default, < 0 disables.
	Refresh RefreshIntervals
	// RetryMin and RetryMax bound the backoff after a failed apply.
	RetryMin, RetryMax time.Duration
	// PendingPoll is how often an apply is retried while routes or interface settings wait for
	// an interface to appear.
	PendingPoll time.Duration

	// LinkEvents, when set, names host-side interfaces that appeared or changed (SubscribeLinks).
	LinkEvents <-chan string
	// HostInterfaces, when set, delivers this host's interface addresses whenever they change
	// (WatchHostInterfaces), for HostEndpoints given by expectedIPs alone.
	HostInterfaces <-chan map[string][]netip.Addr

	// HealthListen and MetricsListen are TCP addresses for /liveness+/readiness and /metrics;
	// "" disables the server.
	HealthListen, MetricsListen string
	// FelixConfigBase, when set, makes the agent follow FelixConfiguration "default" and
	// "node.<NodeName>" while it runs: HealthListen, MetricsListen and Refresh above are
	// the values to start with, and on every change of those resources they are recomputed from
	// FelixConfigBase (the operator's flags, which win where Explicit) and applied in place.
	FelixConfigBase *ComponentConfig
	// IPv6Mode and Backend are the ComponentConfig settings the dataplane was built with; with
	// FelixConfigBase, a FelixConfiguration change of either ends Run with a *RestartError.
	// Empty: not followed.
	IPv6Mode, Backend string
	// LogLevel, when set with FelixConfigBase, is the level the agent's Logger filters at; it
	// follows FelixConfiguration logSeverityScreen (unless FelixConfigBase.Explicit.LogLevel).
	LogLevel *slog.LevelVar
	// Listen binds the health and metrics endpoints (default net.Listen("tcp", addr)); tests
	// pass one that binds inside their network namespace.
	Listen func(addr string) (net.Listener, error)

	// OnState, when set, is called (from the agent's goroutine) whenever readiness changes.
	OnState func(State)
	Logger  *slog.Logger
}

func (c *Config) setDefaults() {
	if c.ApplyInterval <= 0 {
		c.ApplyInterval = DefaultApplyInterval
	}
	c.Refresh = c.Refresh.withDefaults()
	if c.RetryMin <= 0 {
		c.RetryMin = DefaultRetryMin
	}
	if c.RetryMax < c.RetryMin {
		c.RetryMax = max(DefaultRetryMax, c.RetryMin)
	}
	if c.PendingPoll <= 0 {
		c.PendingPoll = DefaultPendingPoll
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Status == nil && c.Client != nil {
		c.Status = c.Client.Store()
	}
}
