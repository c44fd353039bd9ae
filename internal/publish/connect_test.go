package publish

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/ccaas/presence-bridge/internal/config"
	"github.com/ccaas/presence-bridge/internal/embeddednats"
)

// startServer starts an embedded JetStream server adjusted by configure and
// stops it at the end of the test.
func startServer(t *testing.T, configure func(*server.Options) error) *embeddednats.Server {
	t.Helper()
	srv, err := embeddednats.Start(context.Background(), embeddednats.Options{
		Listen: "127.0.0.1:-1", DataDir: t.TempDir(), Configure: configure,
	})
	if err != nil {
		t.Fatalf("start embedded server: %v", err)
	}
	t.Cleanup(srv.Shutdown)
	return srv
}

func writeFile(t *testing.T, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatalf("write %s: %v", name, err)
	}
	return p
}

// testPKI is a CA with a server and a client certificate, as PEM files.
type testPKI struct {
	caFile, serverCert, serverKey, clientCert, clientKey string
	otherCAFile                                          string
}

func newTestPKI(t *testing.T) testPKI {
	t.Helper()
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatalf("generate key: %v", err)
		}
		return k
	}
	keyPEM := func(k *ecdsa.PrivateKey) []byte {
		der, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			t.Fatalf("marshal key: %v", err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
	}
	serial := int64(1)
	makeCA := func(name string) (*x509.Certificate, *ecdsa.PrivateKey, []byte) {
		k := newKey()
		serial++
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
		if err != nil {
			t.Fatalf("create CA: %v", err)
		}
		cert, _ := x509.ParseCertificate(der)
		return cert, k, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	}
	leaf := func(ca *x509.Certificate, caKey *ecdsa.PrivateKey, name string, usage x509.ExtKeyUsage) ([]byte, []byte) {
		k := newKey()
		serial++
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
		if err != nil {
			t.Fatalf("create certificate: %v", err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), keyPEM(k)
	}
	ca, caKey, caPEM := makeCA("test CA")
	_, _, otherPEM := makeCA("other CA")
	sc, sk := leaf(ca, caKey, "server", x509.ExtKeyUsageServerAuth)
	cc, ck := leaf(ca, caKey, "bridge", x509.ExtKeyUsageClientAuth)
	return testPKI{
		caFile: writeFile(t, "ca.pem", caPEM), otherCAFile: writeFile(t, "other-ca.pem", otherPEM),
		serverCert: writeFile(t, "server.pem", sc), serverKey: writeFile(t, "server-key.pem", sk),
		clientCert: writeFile(t, "client.pem", cc), clientKey: writeFile(t, "client-key.pem", ck),
	}
}

func (p testPKI) serverTLS(requireClientCert bool) func(*server.Options) error {
	return func(o *server.Options) error {
		cfg, err := server.GenTLSConfig(&server.TLSConfigOpts{
			CertFile: p.serverCert, KeyFile: p.serverKey, CaFile: p.caFile, Verify: requireClientCert, Timeout: 2,
		})
		if err != nil {
			return err
		}
		o.TLSConfig = cfg
		o.TLS = true
		o.TLSVerify = requireClientCert
		o.TLSTimeout = 2
		return nil
	}
}

// operatorSetup is an operator-mode server configuration and a creds file of
// a user it trusts, plus one of a user signed by an unknown account.
type operatorSetup struct {
	configure          func(*server.Options) error
	credsFile          string
	untrustedCredsFile string
}

func newOperatorSetup(t *testing.T) operatorSetup {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("operator setup: %v", err)
		}
	}
	okp, err := nkeys.CreateOperator()
	must(err)
	opub, _ := okp.PublicKey()
	oc := jwt.NewOperatorClaims(opub)
	oc.Name = "test-operator"
	ojwt, err := oc.Encode(okp)
	must(err)
	oclaims, err := jwt.DecodeOperatorClaims(ojwt)
	must(err)

	userCreds := func(akp nkeys.KeyPair) []byte {
		ukp, err := nkeys.CreateUser()
		must(err)
		upub, _ := ukp.PublicKey()
		uc := jwt.NewUserClaims(upub)
		ujwt, err := uc.Encode(akp)
		must(err)
		seed, _ := ukp.Seed()
		creds, err := jwt.FormatUserConfig(ujwt, seed)
		must(err)
		return creds
	}
	akp, err := nkeys.CreateAccount()
	must(err)
	apub, _ := akp.PublicKey()
	ac := jwt.NewAccountClaims(apub)
	ac.Name = "bridge"
	ajwt, err := ac.Encode(okp)
	must(err)
	other, err := nkeys.CreateAccount()
	must(err)

	return operatorSetup{
		configure: func(o *server.Options) error {
			o.JetStream = false
			o.TrustedOperators = []*jwt.OperatorClaims{oclaims}
			resolver := &server.MemAccResolver{}
			if err := resolver.Store(apub, ajwt); err != nil {
				return err
			}
			o.AccountResolver = resolver
			return nil
		},
		credsFile:          writeFile(t, "bridge.creds", userCreds(akp)),
		untrustedCredsFile: writeFile(t, "other.creds", userCreds(other)),
	}
}

func TestConnectAuthAndTLS(t *testing.T) {
	pki := newTestPKI(t)
	ops := newOperatorSetup(t)
	userSeed, _ := nkeys.CreateUser()
	userPub, _ := userSeed.PublicKey()
	seed, _ := userSeed.Seed()
	otherUser, _ := nkeys.CreateUser()
	otherSeed, _ := otherUser.Seed()
	seedFile := writeFile(t, "user.nk", seed)
	otherSeedFile := writeFile(t, "other.nk", otherSeed)

	userPassword := func(o *server.Options) error { o.Username, o.Password = "bridge", "s3cret-pw"; return nil }
	token := func(o *server.Options) error { o.Authorization = "s3cret-token"; return nil }
	nkey := func(o *server.Options) error { o.Nkeys = []*server.NkeyUser{{Nkey: userPub}}; return nil }

	tests := []struct {
		name      string
		configure func(*server.Options) error
		scheme    string
		opts      ConnOptions
		wantErr   error  // errors.Is target, when set
		wantText  string // substring of the error, when set
	}{
		{name: "user and password", configure: userPassword, opts: ConnOptions{User: "bridge", Password: "s3cret-pw"}},
		{name: "wrong password", configure: userPassword, opts: ConnOptions{User: "bridge", Password: "wrong-pw"}, wantErr: ErrAuthorization},
		{name: "no credentials where required", configure: userPassword, wantErr: ErrAuthorization},
		{name: "token", configure: token, opts: ConnOptions{Token: "s3cret-token"}},
		{name: "wrong token", configure: token, opts: ConnOptions{Token: "wrong-token"}, wantErr: ErrAuthorization},
		{name: "nkey seed file", configure: nkey, opts: ConnOptions{NKeySeedFile: seedFile}},
		{name: "unknown nkey", configure: nkey, opts: ConnOptions{NKeySeedFile: otherSeedFile}, wantErr: ErrAuthorization},
		{name: "missing nkey seed file", configure: nkey, opts: ConnOptions{NKeySeedFile: filepath.Join(t.TempDir(), "none.nk")}, wantText: "read nkey seed file"},
		{name: "credentials file", configure: ops.configure, opts: ConnOptions{CredsFile: ops.credsFile}},
		{name: "untrusted credentials file", configure: ops.configure, opts: ConnOptions{CredsFile: ops.untrustedCredsFile}, wantErr: ErrAuthorization},
		{name: "TLS with CA file", configure: pki.serverTLS(false), scheme: "tls", opts: ConnOptions{CAFile: pki.caFile}},
		{name: "TLS with wrong CA", configure: pki.serverTLS(false), scheme: "tls", opts: ConnOptions{CAFile: pki.otherCAFile}, wantText: "certificate"},
		{name: "mutual TLS", configure: pki.serverTLS(true), scheme: "tls", opts: ConnOptions{CAFile: pki.caFile, CertFile: pki.clientCert, KeyFile: pki.clientKey}},
		{name: "mutual TLS without client certificate", configure: pki.serverTLS(true), scheme: "tls", opts: ConnOptions{CAFile: pki.caFile}, wantText: "tls"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := startServer(t, tt.configure)
			scheme := tt.scheme
			if scheme == "" {
				scheme = "nats"
			}
			opts := tt.opts
			opts.URL = scheme + "://" + srv.Addr()
			opts.ConnectTimeout = 2 * time.Second
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			start := time.Now()
			nc, err := Connect(ctx, opts)
			if tt.wantErr == nil && tt.wantText == "" {
				if err != nil {
					t.Fatalf("Connect: %v", err)
				}
				defer nc.Close()
				if err := nc.Flush(); err != nil {
					t.Fatalf("flush: %v", err)
				}
				return
			}
			if err == nil {
				nc.Close()
				t.Fatal("Connect succeeded, want error")
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("error %q is not %v", err, tt.wantErr)
			}
			if tt.wantText != "" && !strings.Contains(strings.ToLower(err.Error()), tt.wantText) {
				t.Errorf("error %q does not mention %q", err, tt.wantText)
			}
			for _, secret := range []string{"s3cret", "wrong-pw", "wrong-token", string(seed), string(otherSeed)} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error %q reveals a secret", err)
				}
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("failing took %s: a hidden retry loop?", d)
			}
		})
	}
}

func TestConnectServerList(t *testing.T) {
	srv := startServer(t, nil)
	// A closed port first: the client must move on to the next server.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close()
	nc, err := Connect(context.Background(), ConnOptions{URL: "nats://" + dead + ", nats://" + srv.Addr(), ConnectTimeout: time.Second})
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	defer nc.Close()
	if got := nc.ConnectedAddr(); got != srv.Addr() {
		t.Errorf("connected to %s, want %s", got, srv.Addr())
	}
}

func TestConnectValidatesOptions(t *testing.T) {
	tests := []struct {
		name string
		opts ConnOptions
		want string
	}{
		{"no url", ConnOptions{}, "no NATS server URL"},
		{"two methods", ConnOptions{URL: "nats://x:1", Token: "t", User: "u"}, "more than one"},
		{"password without user", ConnOptions{URL: "nats://x:1", Password: "p"}, "without a user"},
		{"cert without key", ConnOptions{URL: "nats://x:1", CertFile: "c"}, "together"},
		{"not a url", ConnOptions{URL: "nats://u:hidden@:1,::"}, "not a URL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Connect(context.Background(), tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one containing %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "hidden") {
				t.Errorf("error %q reveals a password", err)
			}
		})
	}
}

func TestRedactURLs(t *testing.T) {
	got := RedactURLs("nats://bridge:pw@a:4222, nats://b:4222")
	if strings.Contains(got, "pw") || !strings.Contains(got, "nats://b:4222") {
		t.Errorf("RedactURLs = %q", got)
	}
}

// TestConnectRetryWaitsForTheServer: ConnectRetry keeps trying while nothing
// listens and connects once a server comes up; a refused credential ends it
// at once.
func TestConnectRetryWaitsForTheServer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var retries atomic.Int64
	logged := make(chan struct{}, 1)
	log := slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
		if strings.Contains(string(p), "NATS unreachable; retrying") && retries.Add(1) == 1 {
			logged <- struct{}{}
		}
		return len(p), nil
	}), nil))
	type result struct {
		nc  *nats.Conn
		err error
	}
	done := make(chan result, 1)
	go func() {
		nc, err := ConnectRetry(ctx, ConnOptions{URL: "nats://" + addr, ConnectTimeout: time.Second, Logger: log})
		done <- result{nc, err}
	}()
	select {
	case <-logged:
	case r := <-done:
		t.Fatalf("ConnectRetry returned before any server listened: %v", r.err)
	case <-ctx.Done():
		t.Fatal("no retry logged")
	}
	srv, err := embeddednats.Start(ctx, embeddednats.Options{Listen: addr, DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	r := <-done
	if r.err != nil {
		t.Fatalf("ConnectRetry after the server came up: %v", r.err)
	}
	r.nc.Close()

	authSrv := startServer(t, func(o *server.Options) error { o.Username, o.Password = "u", "right"; return nil })
	_, err = ConnectRetry(ctx, ConnOptions{URL: authSrv.ClientURL(), User: "u", Password: "wrong"})
	if !errors.Is(err, ErrAuthorization) {
		t.Fatalf("ConnectRetry with a wrong password = %v, want ErrAuthorization at once", err)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func TestPlaintextSecret(t *testing.T) {
	tests := []struct {
		name      string
		opts      ConnOptions
		connected string
		tls       bool
		want      string
	}{
		{"password to a remote server", ConnOptions{User: "u", Password: "p"}, "nats://10.0.4.7:4222", false, "password"},
		{"token to a remote host name", ConnOptions{Token: "t"}, "nats://nats.nats.svc:4222", false, "token"},
		{"password in the URL", ConnOptions{URL: "nats://u:p@nats.example.com:4222"}, "nats://u:p@nats.example.com:4222", false, "password"},
		{"token in the URL", ConnOptions{URL: "nats://tok@nats.example.com:4222"}, "nats://tok@nats.example.com:4222", false, "token"},
		{"credentials in another server's URL", ConnOptions{URL: "nats://u:p@a:4222,nats://b:4222"}, "nats://b:4222", false, "password"},
		{"password over TLS", ConnOptions{User: "u", Password: "p", CAFile: "ca.pem"}, "tls://10.0.4.7:4222", true, ""},
		{"server upgraded nats:// to TLS", ConnOptions{Token: "t"}, "nats://10.0.4.7:4222", true, ""},
		{"password to 127.0.0.1", ConnOptions{User: "u", Password: "p"}, "nats://127.0.0.1:4222", false, ""},
		{"password to 127.0.0.2", ConnOptions{User: "u", Password: "p"}, "nats://127.0.0.2:4222", false, ""},
		{"token to localhost", ConnOptions{Token: "t"}, "nats://localhost:4222", false, ""},
		{"token to ::1", ConnOptions{Token: "t"}, "nats://[::1]:4222", false, ""},
		{"credentials file: the seed never leaves", ConnOptions{CredsFile: "bridge.creds"}, "nats://10.0.4.7:4222", false, ""},
		{"NKey: the seed never leaves", ConnOptions{NKeySeedFile: "bridge.nk"}, "nats://10.0.4.7:4222", false, ""},
		{"no authentication", ConnOptions{}, "nats://10.0.4.7:4222", false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := plaintextSecret(tt.opts, tt.connected, tt.tls); got != tt.want {
				t.Errorf("plaintextSecret = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestWarningSettingsAreVariables checks that the warning names variables the
// bridge reads.
func TestWarningSettingsAreVariables(t *testing.T) {
	names := map[string]bool{}
	typ := reflect.TypeFor[config.Config]()
	for i := range typ.NumField() {
		names[typ.Field(i).Tag.Get("envconfig")] = true
	}
	for _, s := range []string{SettingNATSCA, SettingNATSURL} {
		if !names[s] {
			t.Errorf("the warning names %s, which is not a variable of internal/config", s)
		}
	}
}

// nonLoopbackIPv4 returns an IPv4 address of this machine that is not on the
// loopback interface, or "" when it has none.
func nonLoopbackIPv4(t *testing.T) string {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatalf("list interface addresses: %v", err)
	}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil && !ipn.IP.IsLoopback() && !ipn.IP.IsLinkLocalUnicast() {
			return ipn.IP.String()
		}
	}
	return ""
}

// TestConnectWarnsOfAPasswordInTheClear connects with a password to a real
// server, once through a non-loopback address and once through 127.0.0.1:
// only the first draws the warning, exactly once, naming the settings that
// would encrypt the connection and never the password.
func TestConnectWarnsOfAPasswordInTheClear(t *testing.T) {
	const password = "pl41ntext-S3CRET"
	ip := nonLoopbackIPv4(t)
	if ip == "" {
		t.Skip("this machine has no non-loopback IPv4 address to reach the server through")
	}
	srv, err := embeddednats.Start(context.Background(), embeddednats.Options{
		Listen: "0.0.0.0:-1", DataDir: t.TempDir(),
		Configure: func(o *server.Options) error { o.Username, o.Password = "bridge", password; return nil },
	})
	if err != nil {
		t.Fatalf("start server: %v", err)
	}
	t.Cleanup(srv.Shutdown)
	_, port, err := net.SplitHostPort(srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		host     string
		warnings int
	}{
		{"non-loopback address", ip, 1},
		{"loopback address", "127.0.0.1", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs lockedBuffer
			nc, err := Connect(context.Background(), ConnOptions{
				URL: "nats://" + net.JoinHostPort(tt.host, port), User: "bridge", Password: password,
				Logger: slog.New(slog.NewJSONHandler(&logs, nil)),
			})
			if err != nil {
				t.Fatalf("connect: %v", err)
			}
			nc.Close()
			var warnings []string
			for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
				if strings.Contains(line, `"level":"WARN"`) {
					warnings = append(warnings, line)
				}
			}
			if len(warnings) != tt.warnings {
				t.Fatalf("%d warnings, want %d:\n%s", len(warnings), tt.warnings, logs.String())
			}
			for _, w := range warnings {
				if !strings.Contains(w, SettingNATSCA) || !strings.Contains(w, "tls://") || !strings.Contains(w, "password") {
					t.Errorf("warning %s does not say what is sent and which setting encrypts it", w)
				}
			}
			if strings.Contains(logs.String(), password) {
				t.Errorf("the logs contain the password:\n%s", logs.String())
			}
		})
	}
}

// lockedBuffer is a bytes.Buffer safe for the connection's callbacks.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
