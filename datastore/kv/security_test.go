package kv

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/terracenet/terrace/datastore/embedded"
)

type certPair struct{ cert, key string }

// writeCert signs a certificate with parent (self-signed when parent is nil) and writes PEM files.
func writeCert(t *testing.T, dir, name string, tmpl *x509.Certificate, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (certPair, *x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatalf("create certificate %s: %v", name, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	p := certPair{cert: filepath.Join(dir, name+".pem"), key: filepath.Join(dir, name+"-key.pem")}
	if err := os.WriteFile(p.cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p.key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p, cert, key
}

func TestTLSClientCertificates(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	ca, caCert, caKey := writeCert(t, dir, "ca", &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "terrace-test-ca"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}, nil, nil)
	server, _, _ := writeCert(t, dir, "server", &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "etcd"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}, caCert, caKey)
	client, _, _ := writeCert(t, dir, "client", &x509.Certificate{
		SerialNumber: big.NewInt(3), Subject: pkix.Name{CommonName: "terrace-node"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, caCert, caKey)
	// A certificate from a different CA must be refused even though it is well-formed.
	_, otherCA, otherKey := writeCert(t, dir, "other-ca", &x509.Certificate{
		SerialNumber: big.NewInt(4), Subject: pkix.Name{CommonName: "other-ca"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}, nil, nil)
	stranger, _, _ := writeCert(t, dir, "stranger", &x509.Certificate{
		SerialNumber: big.NewInt(5), Subject: pkix.Name{CommonName: "stranger"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, otherCA, otherKey)

	srv := embedded.StartForTestWith(t, embedded.Config{
		CertFile: server.cert, KeyFile: server.key, TrustedCAFile: ca.cert, ClientCertAuth: true,
	})
	eps := srv.Endpoints()

	notPEM := filepath.Join(t.TempDir(), "ca.txt")
	if err := os.WriteFile(notPEM, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		cfg  Config
		ok   bool
		// badFiles: refused for its files (ErrTLSConfig), before any connection is tried.
		badFiles bool
	}{
		{"client cert signed by CA", Config{CAFile: ca.cert, CertFile: client.cert, KeyFile: client.key}, true, false},
		{"no client cert", Config{CAFile: ca.cert}, false, false},
		{"client cert from another CA", Config{CAFile: ca.cert, CertFile: stranger.cert, KeyFile: stranger.key}, false, false},
		{"server not trusted", Config{CertFile: client.cert, KeyFile: client.key}, false, false},
		{"cert without key", Config{CAFile: ca.cert, CertFile: client.cert}, false, true},
		{"missing CA file", Config{CAFile: ca.cert + ".gone", CertFile: client.cert, KeyFile: client.key}, false, true},
		{"CA file not PEM", Config{CAFile: notPEM, CertFile: client.cert, KeyFile: client.key}, false, true},
		{"cert and key not a pair", Config{CAFile: ca.cert, CertFile: client.cert, KeyFile: stranger.key}, false, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// A refused handshake costs the whole dial timeout; the cases are independent, so
			// they wait side by side.
			t.Parallel()
			cfg := tc.cfg
			cfg.Endpoints = eps
			cfg.DialTimeout = time.Second
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			s, err := Open(ctx, cfg, nil)
			if !tc.ok {
				if err == nil {
					s.Close()
					t.Fatal("Open succeeded, want failure")
				}
				if errors.Is(err, ErrTLSConfig) != tc.badFiles {
					t.Fatalf("Open: %v; marked as a TLS configuration error: %v, want %v", err, errors.Is(err, ErrTLSConfig), tc.badFiles)
				}
				return
			}
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			defer s.Close()
			if _, err := s.Put(ctx, "/tls/k", []byte("v")); err != nil {
				t.Fatalf("put over TLS: %v", err)
			}
			if kv, err := s.Get(ctx, "/tls/k"); err != nil || string(kv.Value) != "v" {
				t.Fatalf("get over TLS: %+v %v", kv, err)
			}
		})
	}
}

func TestUsernamePassword(t *testing.T) {
	srv := embedded.StartForTest(t)
	admin := openStore(t, srv)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cli := admin.Client()
	if _, err := cli.UserAdd(ctx, "root", "s3cret"); err != nil {
		t.Fatalf("add root user: %v", err)
	}
	if _, err := cli.UserGrantRole(ctx, "root", "root"); err != nil {
		t.Fatalf("grant root role: %v", err)
	}
	if _, err := cli.AuthEnable(ctx); err != nil {
		t.Fatalf("enable auth: %v", err)
	}

	tests := []struct {
		name, user, pass string
		ok               bool
	}{
		{"right password", "root", "s3cret", true},
		{"wrong password", "root", "nope", false},
		{"unknown user", "mallory", "s3cret", false},
		{"no credentials", "", "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Open(ctx, Config{Endpoints: srv.Endpoints(), Username: tc.user, Password: tc.pass, DialTimeout: 3 * time.Second}, nil)
			if err != nil {
				if tc.ok {
					t.Fatalf("Open: %v", err)
				}
				return
			}
			defer s.Close()
			_, err = s.Put(ctx, "/auth/k", []byte("v"))
			if tc.ok && err != nil {
				t.Fatalf("put with valid credentials: %v", err)
			}
			if !tc.ok && err == nil {
				t.Fatal("put without valid credentials succeeded")
			}
		})
	}
}
