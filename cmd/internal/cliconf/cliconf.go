// Package cliconf resolves the configuration of Terrace's binaries with one precedence rule:
// command-line flags, then TERRACE_* environment variables, then /etc/terrace/<binary>.yaml, then
// the flag defaults. It also builds the etcd connection settings and loggers the binaries share.
// It owns how configuration is found and read; it must never connect to anything or change the
// system it runs on.
package cliconf

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"github.com/spf13/viper"

	"github.com/terracenet/terrace/datastore/kv"
)

// EnvPrefix is the prefix of every environment variable Terrace reads.
const EnvPrefix = "TERRACE"

// ConfigDir is where the per-binary config files live.
const ConfigDir = "/etc/terrace"

// Etcd flag names shared by every binary that talks to the datastore.
const (
	FlagEtcdEndpoints   = "etcd-endpoints"
	FlagEtcdCA          = "etcd-ca"
	FlagEtcdCert        = "etcd-cert"
	FlagEtcdKey         = "etcd-key"
	FlagEtcdUsername    = "etcd-username"
	FlagEtcdPassword    = "etcd-password"
	FlagEtcdDialTimeout = "etcd-dial-timeout"
)

// DefaultEtcdEndpoint is used when nothing names an endpoint: the embedded etcd's usual address.
const DefaultEtcdEndpoint = "http://127.0.0.1:2379"

// DefaultFile is the config file path for a binary.
func DefaultFile(binary string) string { return filepath.Join(ConfigDir, binary+".yaml") }

// EnvName is the environment variable that configures a flag, e.g. etcd-endpoints => TERRACE_ETCD_ENDPOINTS.
func EnvName(flag string) string {
	return EnvPrefix + "_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// AddEtcdFlags registers the datastore connection flags on fs.
func AddEtcdFlags(flags *pflag.FlagSet, dialTimeout time.Duration) {
	flags.String(FlagEtcdEndpoints, DefaultEtcdEndpoint, "etcd endpoints, comma separated (env "+EnvName(FlagEtcdEndpoints)+")")
	flags.String(FlagEtcdCA, "", "CA certificate file for etcd TLS")
	flags.String(FlagEtcdCert, "", "client certificate file for etcd TLS")
	flags.String(FlagEtcdKey, "", "client key file for etcd TLS")
	flags.String(FlagEtcdUsername, "", "etcd user name")
	flags.String(FlagEtcdPassword, "", "etcd password (prefer the environment variable "+EnvName(FlagEtcdPassword)+")")
	flags.Duration(FlagEtcdDialTimeout, dialTimeout, "how long to wait for etcd to answer when connecting")
}

// Source says where a resolved value came from; binaries log it so an operator can see why a
// setting has the value it has.
type Source string

const (
	SourceFlag    Source = "flag"
	SourceEnv     Source = "env"
	SourceFile    Source = "file"
	SourceDefault Source = "default"
)

// Config is the resolved configuration of one binary invocation.
type Config struct {
	v     *viper.Viper
	fs    *pflag.FlagSet
	file  string // the config file that was read, "" if none
	env   func(string) (string, bool)
	inFil map[string]bool
	// known says whether a config file key is one the binary reads from its file (nil: the keys
	// of fs); see WithKnownKeys.
	known func(string) bool
}

// Load resolves fs against the environment and the binary's default config file. A missing
// default file is not an error; an unreadable or malformed one is.
func Load(flags *pflag.FlagSet, binary string) (*Config, error) {
	return LoadFile(flags, DefaultFile(binary), false)
}

// LoadFile is Load with an explicit config file; required says whether its absence is an error
// (true when the user named the file).
func LoadFile(flags *pflag.FlagSet, path string, required bool, opts ...Option) (*Config, error) {
	v := viper.New()
	v.SetEnvPrefix(EnvPrefix)
	v.SetEnvKeyReplacer(strings.NewReplacer("-", "_"))
	v.AutomaticEnv()
	if err := v.BindPFlags(flags); err != nil {
		return nil, fmt.Errorf("bind flags: %w", err)
	}
	c := &Config{v: v, fs: flags, env: os.LookupEnv, inFil: map[string]bool{}}
	for _, o := range opts {
		o(c)
	}
	if path != "" {
		data, err := os.ReadFile(path)
		switch {
		case errors.Is(err, fs.ErrNotExist) && !required:
		case err != nil:
			return nil, fmt.Errorf("read config file: %w", err)
		default:
			v.SetConfigType("yaml")
			if err := v.ReadConfig(strings.NewReader(string(data))); err != nil {
				return nil, fmt.Errorf("parse config file %s: %w", path, err)
			}
			c.file = path
			for _, k := range v.AllKeys() {
				if v.InConfig(k) {
					c.inFil[k] = true
				}
			}
			if err := c.checkFileKeys(); err != nil {
				return nil, err
			}
		}
	}
	return c, nil
}

// Option adjusts LoadFile.
type Option func(*Config)

// WithKnownKeys says which keys the binary's config file may hold. A binary has one file for all
// its subcommands, so a key another subcommand reads is no typo for this one (terrace-node's
// etcd must start from a file written for run); and a flag a subcommand reads only from its
// command line must not be accepted from the file and then ignored.
func WithKnownKeys(known func(key string) bool) Option {
	return func(c *Config) { c.known = known }
}

// checkFileKeys refuses keys the binary does not read from its file: a typo in a config file
// would otherwise be silently ignored and the default used instead.
func (c *Config) checkFileKeys() error {
	known := c.known
	if known == nil {
		known = func(k string) bool { return c.fs.Lookup(k) != nil }
	}
	var errs []error
	for _, k := range slices.Sorted(maps.Keys(c.inFil)) {
		if !known(k) {
			errs = append(errs, fmt.Errorf("config file %s: unknown key %q", c.file, k))
		}
	}
	return errors.Join(errs...)
}

// File is the config file that was read, or "".
func (c *Config) File() string { return c.file }

// Source reports where the value of flag name comes from.
func (c *Config) Source(name string) Source {
	if f := c.fs.Lookup(name); f != nil && f.Changed {
		return SourceFlag
	}
	if v, ok := c.env(EnvName(name)); ok && v != "" {
		return SourceEnv
	}
	if c.inFil[name] {
		return SourceFile
	}
	return SourceDefault
}

// Where names the place a value came from, for error messages: the flag, the variable, the file
// or the default.
func (c *Config) Where(name string) string { return c.where(name) }

// where names the place a value came from, for error messages: the variable or the file.
func (c *Config) where(name string) string {
	switch src := c.Source(name); src {
	case SourceEnv:
		return "env " + EnvName(name)
	case SourceFile:
		return "file " + c.File()
	case SourceFlag:
		return "flag --" + name
	default:
		return string(src)
	}
}

// String returns the resolved value of flag name.
func (c *Config) String(name string) string {
	switch x := c.v.Get(name).(type) {
	case []any:
		parts := make([]string, 0, len(x))
		for _, p := range x {
			parts = append(parts, fmt.Sprint(p))
		}
		return strings.Join(parts, ",")
	case nil:
		return ""
	default:
		return c.v.GetString(name)
	}
}

// List returns a comma-separated (or, in the config file, YAML list) value split into its
// non-empty trimmed parts.
func (c *Config) List(name string) []string {
	var out []string
	for _, p := range strings.Split(c.String(name), ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// Bool returns the resolved value of a boolean flag. A value from the environment or the file
// that is not a boolean ("yes", "on", a typo) is an error naming its source: read as false, it
// would silently switch a component off, while the same text on the command line is refused.
func (c *Config) Bool(name string) (bool, error) {
	switch x := c.v.Get(name).(type) {
	case bool:
		return x, nil
	case string:
		b, err := strconv.ParseBool(strings.TrimSpace(x))
		if err != nil {
			return false, fmt.Errorf("parse %s (from %s): %q is not true or false", name, c.where(name), x)
		}
		return b, nil
	case nil:
		return false, nil
	default:
		return false, fmt.Errorf("parse %s (from %s): %v is not true or false", name, c.where(name), x)
	}
}

// Duration returns the resolved value of a duration flag; a malformed env or file value is an error.
func (c *Config) Duration(name string) (time.Duration, error) {
	s := c.String(name)
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("parse %s (from %s): %w", name, c.where(name), err)
	}
	return d, nil
}

// Etcd builds the datastore connection settings from the etcd flags.
func (c *Config) Etcd() (kv.Config, error) {
	cfg := kv.Config{
		Endpoints: c.List(FlagEtcdEndpoints),
		CAFile:    c.String(FlagEtcdCA),
		CertFile:  c.String(FlagEtcdCert),
		KeyFile:   c.String(FlagEtcdKey),
		Username:  c.String(FlagEtcdUsername),
		Password:  c.String(FlagEtcdPassword),
	}
	var errs []error
	if len(cfg.Endpoints) == 0 {
		errs = append(errs, errors.New("no etcd endpoints: set --etcd-endpoints or "+EnvName(FlagEtcdEndpoints)))
	}
	if (cfg.CertFile == "") != (cfg.KeyFile == "") {
		errs = append(errs, errors.New("--etcd-cert and --etcd-key must be given together"))
	}
	if cfg.Password != "" && cfg.Username == "" {
		errs = append(errs, errors.New("--etcd-password needs --etcd-username"))
	}
	if c.fs.Lookup(FlagEtcdDialTimeout) != nil {
		d, err := c.Duration(FlagEtcdDialTimeout)
		if err != nil {
			errs = append(errs, err)
		}
		cfg.DialTimeout = d
	}
	if err := errors.Join(errs...); err != nil {
		return kv.Config{}, fmt.Errorf("configure etcd: %w", err)
	}
	return cfg, nil
}
