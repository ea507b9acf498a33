package security

import (
	"bytes"
	"context"
	"crypto/x509"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	pb "istio.io/api/security/v1alpha1"
)

// serve runs svc on a real gRPC server on 127.0.0.1 and returns a client
// connection to it.
func serve(t *testing.T, svc *Service) *grpc.ClientConn {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	svc.Register(srv)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(lis) }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		srv.Stop()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return conn
}

func TestService(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	path := filepath.Join(t.TempDir(), "tokens")
	writeFile(t, path, []byte("good-token shop cart\n"))
	tokens, err := NewBootstrapTokens(path)
	if err != nil {
		t.Fatal(err)
	}
	ca := mustCA(t, CAOptions{})
	if err := ca.RotateRoot(ctx); err != nil { // two roots in the bundle
		t.Fatal(err)
	}
	reg := prometheus.NewPedanticRegistry()
	logs := newLogRecorder()
	svc, err := NewService(ServiceOptions{CA: ca, Authenticator: tokens, Registerer: reg, Logger: slog.New(logs)})
	if err != nil {
		t.Fatal(err)
	}
	conn := serve(t, svc)

	key := mustKey(t)
	chain, roots, err := RequestCertificate(ctx, conn, "good-token", key, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	logs.waitLog(t, "certificate issued")
	if len(chain) != 1 {
		t.Fatalf("chain of %d certificates, want the leaf only", len(chain))
	}
	if !bytes.Equal(EncodeCertificates(roots...), EncodeCertificates(ca.Roots()[1], ca.Roots()[0])) {
		t.Error("roots: want the CA's, the signing root last")
	}
	id, err := IDFromCert(chain[0])
	if err != nil {
		t.Fatal(err)
	}
	if got, want := id.String(), "spiffe://cluster.local/ns/shop/sa/cart"; got != want {
		t.Errorf("ID %s, want %s", got, want)
	}
	if got := chain[0].NotAfter.Sub(chain[0].NotBefore); got != time.Hour+5*time.Minute {
		t.Errorf("validity %v, want 1h5m (1h asked, 5m of clock skew)", got)
	}
	pool := x509.NewCertPool()
	for _, r := range roots {
		pool.AddCert(r)
	}
	tlsCert := TLSCertificate(chain, key)
	if got, err := VerifyPeer(tlsCert.Certificate, pool, "cluster.local", time.Now()); err != nil || got != id {
		t.Errorf("VerifyPeer = %v, %v; want %v", got, err, id)
	}

	// Refusals.
	tests := []struct {
		name   string
		call   func() error
		code   codes.Code
		reason string
	}{
		{
			name: "bad token",
			call: func() error {
				chain, roots, err := RequestCertificate(ctx, conn, "bad-token", mustKey(t), 0)
				if chain != nil || roots != nil {
					t.Error("certificates returned with a bad token")
				}
				if err == nil || !strings.Contains(err.Error(), "unknown bootstrap token") {
					t.Errorf("error %v does not give the reason", err)
				}
				return err
			},
			code: codes.Unauthenticated, reason: reasonUnauthenticated,
		},
		{
			name: "no token",
			call: func() error {
				_, err := pb.NewIstioCertificateServiceClient(conn).CreateCertificate(ctx, &pb.IstioCertificateRequest{Csr: pemCSRString(newCSR(t, mustKey(t), nil))})
				return err
			},
			code: codes.Unauthenticated, reason: reasonUnauthenticated,
		},
		{
			name: "bad CSR",
			call: func() error {
				ctx := metadataCtx(ctx, "good-token")
				_, err := pb.NewIstioCertificateServiceClient(conn).CreateCertificate(ctx, &pb.IstioCertificateRequest{Csr: "not a CSR"})
				return err
			},
			code: codes.InvalidArgument, reason: reasonBadRequest,
		},
		{
			name: "bad CSR signature",
			call: func() error {
				csr := newCSR(t, mustKey(t), nil)
				csr[len(csr)-1] ^= 0xff
				ctx := metadataCtx(ctx, "good-token")
				_, err := pb.NewIstioCertificateServiceClient(conn).CreateCertificate(ctx, &pb.IstioCertificateRequest{Csr: pemCSRString(csr)})
				return err
			},
			code: codes.InvalidArgument, reason: reasonBadRequest,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := testutil.ToFloat64(svc.metrics.refused.WithLabelValues(tt.reason))
			err := tt.call()
			if got := status.Code(err); got != tt.code {
				t.Errorf("error %v, want code %v", err, tt.code)
			}
			logs.waitLog(t, "certificate refused")
			if got := testutil.ToFloat64(svc.metrics.refused.WithLabelValues(tt.reason)) - before; got != 1 {
				t.Errorf("refused{reason=%q} moved by %v, want 1", tt.reason, got)
			}
		})
	}

	want := `
# HELP tender_ca_certificates_issued_total Workload certificates the CA issued.
# TYPE tender_ca_certificates_issued_total counter
tender_ca_certificates_issued_total 1
# HELP tender_ca_requests_refused_total Certificate requests the CA refused, by reason: unauthenticated, bad_request, internal.
# TYPE tender_ca_requests_refused_total counter
tender_ca_requests_refused_total{reason="bad_request"} 2
tender_ca_requests_refused_total{reason="internal"} 0
tender_ca_requests_refused_total{reason="unauthenticated"} 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
}

func TestBearerToken(t *testing.T) {
	tests := []struct {
		name   string
		values []string
		want   string
	}{
		{name: "bearer", values: []string{"Bearer abc"}, want: "abc"},
		{name: "lowercase scheme", values: []string{"bearer abc"}, want: "abc"},
		{name: "basic then bearer", values: []string{"Basic Zm9v", "Bearer abc"}, want: "abc"},
		{name: "basic", values: []string{"Basic Zm9v"}},
		{name: "empty bearer", values: []string{"Bearer "}},
		{name: "none"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			md := metadata.MD{}
			for _, v := range tt.values {
				md.Append("authorization", v)
			}
			got, ok := BearerToken(metadata.NewIncomingContext(context.Background(), md))
			if diff := cmp.Diff(tt.want, got); diff != "" || ok != (tt.want != "") {
				t.Errorf("BearerToken = %q, %v; want %q", got, ok, tt.want)
			}
		})
	}
}

func TestNewServiceRefuses(t *testing.T) {
	ca := mustCA(t, CAOptions{})
	if _, err := NewService(ServiceOptions{CA: ca}); err == nil {
		t.Error("no authenticator accepted")
	}
	if _, err := NewService(ServiceOptions{Authenticator: Chain{}}); err == nil {
		t.Error("no CA accepted")
	}
	reg := prometheus.NewRegistry()
	if _, err := NewService(ServiceOptions{CA: ca, Authenticator: Chain{}, Registerer: reg}); err != nil {
		t.Fatal(err)
	}
	if _, err := NewService(ServiceOptions{CA: ca, Authenticator: Chain{}, Registerer: reg}); err == nil {
		t.Error("metrics registered twice without an error")
	}
}

func metadataCtx(ctx context.Context, token string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
}
