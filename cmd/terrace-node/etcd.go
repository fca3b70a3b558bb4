package main

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/terracenet/terrace/datastore/embedded"
)

func newEtcdCmd(errOut io.Writer) *cobra.Command {
	var configFile string
	cmd := &cobra.Command{
		Use:   "etcd --data-dir DIR --listen-client URL",
		Short: "Run an embedded single-member etcd with its data on disk until SIGTERM",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, log, closeLog, err := setup(cmd, configFile, errOut)
			if err != nil {
				return err
			}
			defer closeLog()
			clientAuth, err := cfg.Bool("client-cert-auth")
			if err != nil {
				return usageError{err}
			}
			ec := embedded.Config{
				DataDir:        cfg.String("data-dir"),
				ListenClient:   cfg.String("listen-client"),
				ListenPeer:     cfg.String("listen-peer"),
				CertFile:       cfg.String("cert-file"),
				KeyFile:        cfg.String("key-file"),
				TrustedCAFile:  cfg.String("trusted-ca-file"),
				ClientCertAuth: clientAuth,
				Logger:         log,
			}
			var errs []error
			if ec.DataDir == "" {
				errs = append(errs, errors.New("--data-dir is required"))
			}
			if ec.ListenClient == "" {
				errs = append(errs, errors.New("--listen-client is required"))
			}
			if len(errs) == 0 {
				// URLs and TLS settings, before anything is created.
				if err := ec.Validate(); err != nil {
					errs = append(errs, err)
				}
			}
			if err := errors.Join(errs...); err != nil {
				return usageError{err}
			}
			srv, err := embedded.Start(cmd.Context(), ec)
			if err != nil {
				if cmd.Context().Err() != nil {
					// Stopped by a signal before etcd was ready: an orderly stop, as `run`'s.
					log.Info("stopped before etcd was ready")
					return nil
				}
				return fmt.Errorf("start etcd: %w", err)
			}
			log.Info("embedded etcd serving", "endpoints", strings.Join(srv.Endpoints(), ","), "data_dir", ec.DataDir)
			select {
			case <-cmd.Context().Done():
				log.Info("stopping embedded etcd")
				srv.Stop()
				return nil
			case err := <-srv.Err():
				srv.Stop()
				return fmt.Errorf("embedded etcd failed: %w", err)
			}
		},
	}
	f := cmd.Flags()
	f.String("data-dir", "", "directory holding etcd's data (created if absent)")
	f.String("listen-client", "", "client URL, e.g. http://127.0.0.1:2379")
	f.String("listen-peer", "", "peer URL (default: a free loopback port; a single member never uses it)")
	f.String("cert-file", "", "server certificate for an https client URL")
	f.String("key-file", "", "server key")
	f.String("trusted-ca-file", "", "CA that signs client certificates")
	f.Bool("client-cert-auth", false, "require client certificates")
	addCommonFlags(cmd, &configFile)
	return cmd
}
