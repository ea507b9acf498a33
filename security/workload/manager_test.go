package workload

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/tender-mesh/tender/security"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testCA runs the CA service over TLS on loopback, as the control plane
// does, with bootstrap tokens "tok-alice" (ns a, sa alice) and "tok-bob".
type testCA struct {
	ca   *security.CA
	addr string
	dir  string
}

func startCA(t *testing.T) *testCA {
	t.Helper()
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	if err := os.WriteFile(tokens, []byte("tok-alice a alice\ntok-bob b bob\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ca, err := security.NewCA(context.Background(), security.CAOptions{})
	if err != nil {
		t.Fatal(err)
	}
	bt, err := security.NewBootstrapTokens(tokens)
	if err != nil {
		t.Fatal(err)
	}
	svc, err := security.NewService(security.ServiceOptions{CA: ca, Authenticator: bt})
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.Issue(security.ID{TrustDomain: "cluster.local", Namespace: "tender-system", ServiceAccount: "cp"}, []string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{*cert}, MinVersion: tls.VersionTLS13})))
	svc.Register(srv)
	done := make(chan struct{})
	go func() { srv.Serve(lis); close(done) }() //nolint:errcheck // ends with Stop
	t.Cleanup(func() { srv.Stop(); <-done })
	return &testCA{ca: ca, addr: lis.Addr().String(), dir: dir}
}

// manager starts a Manager with token tok and returns it with its issue
// and failure counts; it stops with the test.
func (c *testCA) manager(t *testing.T, tok string, ttl time.Duration, cpID string) (*Manager, *atomic.Int32, *atomic.Int32) {
	t.Helper()
	tokenFile := filepath.Join(c.dir, tok)
	if err := os.WriteFile(tokenFile, []byte(tok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var issued, failed atomic.Int32
	m, err := New(Options{CAAddr: c.addr, Roots: c.ca.Bundle(), TokenFile: tokenFile, TTL: ttl, ControlPlaneID: cpID,
		OnIssued: func(time.Time, bool) { issued.Add(1) }, OnFailure: func() { failed.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { m.Run(ctx); close(done) }() //nolint:errcheck // Run returns nil on cancel
	t.Cleanup(func() { cancel(); <-done; m.Close() })
	return m, &issued, &failed
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// handshake runs client and server TLS over a loopback connection and
// returns the identities each side saw, or the first error.
func handshake(t *testing.T, client, server *tls.Config) (clientSaw, serverSaw string, err error) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	type result struct {
		id  string
		err error
	}
	srvRes := make(chan result, 1)
	go func() {
		c, err := lis.Accept()
		if err != nil {
			srvRes <- result{err: err}
			return
		}
		defer c.Close()
		tc := tls.Server(c, server)
		if err := tc.Handshake(); err != nil {
			srvRes <- result{err: err}
			return
		}
		id, err := security.IDFromCert(tc.ConnectionState().PeerCertificates[0])
		tc.Write([]byte("x")) //nolint:errcheck // the client reads it to finish
		srvRes <- result{id.String(), err}
	}()
	raw, err := net.Dial("tcp", lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	tc := tls.Client(raw, client)
	cerr := tc.Handshake()
	if cerr == nil {
		_, cerr = tc.Read(make([]byte, 1)) // TLS 1.3: the server's verdict on our certificate comes here
	}
	sr := <-srvRes
	if cerr == nil && len(tc.ConnectionState().PeerCertificates) > 0 {
		id, _ := security.IDFromCert(tc.ConnectionState().PeerCertificates[0]) //nolint:errcheck // compared below
		clientSaw = id.String()
	}
	return clientSaw, sr.id, errors.Join(cerr, sr.err)
}

func TestMutualTLSBetweenWorkloads(t *testing.T) {
	ca := startCA(t)
	alice, _, _ := ca.manager(t, "tok-alice", 0, "spiffe://cluster.local/ns/tender-system/sa/cp")
	bob, _, _ := ca.manager(t, "tok-bob", 0, "")
	<-alice.Issued()
	<-bob.Issued()
	if got, want := alice.ID().String(), "spiffe://cluster.local/ns/a/sa/alice"; got != want {
		t.Errorf("alice's ID %s, want %s", got, want)
	}
	clientSaw, serverSaw, err := handshake(t, alice.ClientConfig(ALPNHTTP2), bob.ServerConfig())
	if err != nil {
		t.Fatalf("handshake alice → bob: %v", err)
	}
	if clientSaw != "spiffe://cluster.local/ns/b/sa/bob" || serverSaw != "spiffe://cluster.local/ns/a/sa/alice" {
		t.Errorf("alice saw %q, bob saw %q", clientSaw, serverSaw)
	}

	// A bundle without the mesh's root: bob refuses alice's certificate.
	other, err := security.NewCA(context.Background(), security.CAOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := bob.SetRoots(other.Bundle()); err != nil {
		t.Fatal(err)
	}
	if _, _, err := handshake(t, alice.ClientConfig(ALPNHTTP2), bob.ServerConfig()); err == nil || !strings.Contains(err.Error(), "unknown authority") {
		t.Errorf("handshake against a foreign bundle: %v, want an unknown authority", err)
	}
}

func TestRenewAtHalfLife(t *testing.T) {
	ca := startCA(t)
	m, issued, _ := ca.manager(t, "tok-alice", 2*time.Second, "")
	<-m.Issued()
	first := m.Certificate().Leaf.SerialNumber
	start := time.Now()
	waitFor(t, "a renewal", func() bool { return issued.Load() >= 2 })
	// Half of 2 s: not at once (NotBefore is backdated for clock skew),
	// and not after expiry.
	if took := time.Since(start); took < 500*time.Millisecond || took > 2*time.Second {
		t.Errorf("renewed after %s, want about 1 s", took)
	}
	if m.Certificate().Leaf.SerialNumber.Cmp(first) == 0 {
		t.Error("the certificate did not change")
	}
}

func TestRefusedToken(t *testing.T) {
	ca := startCA(t)
	m, issued, failed := ca.manager(t, "tok-mallory", 0, "")
	waitFor(t, "a refusal", func() bool { return failed.Load() >= 1 })
	if m.Ready() || issued.Load() != 0 {
		t.Error("a refused token got a certificate")
	}
	if _, err := m.ClientConfig(ALPNTCP).GetClientCertificate(nil); !errors.Is(err, ErrNoCertificate) {
		t.Errorf("client certificate before any: %v, want ErrNoCertificate", err)
	}
}

func TestWrongControlPlane(t *testing.T) {
	ca := startCA(t)
	_, issued, failed := ca.manager(t, "tok-alice", 0, "spiffe://cluster.local/ns/tender-system/sa/someone-else")
	waitFor(t, "a refusal", func() bool { return failed.Load() >= 1 })
	if issued.Load() != 0 {
		t.Error("a certificate came from a control plane of the wrong identity")
	}
}

func TestNewRefuses(t *testing.T) {
	for name, o := range map[string]Options{
		"no CA address": {Roots: []byte("x")},
		"no roots":      {CAAddr: "127.0.0.1:1"},
		"bad roots":     {CAAddr: "127.0.0.1:1", Roots: []byte("not pem")},
		"bad identity":  {CAAddr: "127.0.0.1:1", Roots: testRoot(t), ControlPlaneID: "https://x"},
	} {
		if _, err := New(o); err == nil {
			t.Errorf("%s: New accepted %+v", name, o)
		}
	}
}

func testRoot(t *testing.T) []byte {
	t.Helper()
	ca, err := security.NewCA(context.Background(), security.CAOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return ca.Bundle()
}
