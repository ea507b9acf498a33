package e2e

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/tender-mesh/tender/examples/greeter/pb"
)

// The secured mesh: client → frontend → greeter, every pod meshed with
// certificates from the control plane's CA (bootstrap tokens, as outside
// Kubernetes), plus a pod without a sidecar.
type securedMesh struct {
	lab                              *lab
	cp, greeter, frontend, client    *pod
	plain, rogue                     *pod
	cpProc                           *process
	sidecars                         map[string]*process
	dir, meshFile, caDir, tokensFile string
	greeterHTTP                      string
	// greeterAccount is the identity mesh.yaml gives the greeter's
	// endpoint: clients refuse a server that presents another.
	greeterAccount string
	// meshMode is the mesh-wide mTLS mode (PERMISSIVE unless a test
	// says otherwise).
	meshMode string
}

const (
	frontendVIPSecure = "10.96.0.20"
	spiffeClient      = "spiffe://cluster.local/ns/default/sa/client"
	spiffeFrontend    = "spiffe://cluster.local/ns/default/sa/frontend"
)

// securedMeshYAML declares the services, greeter's mTLS mode, and the
// authorization policies given.
func (m *securedMesh) meshYAML(greeterMode, policies string) string {
	return fmt.Sprintf(`services:
  - name: greeter
    vip: %s
    meshed: true
    serviceAccount: %s
    ports: [{name: http, port: 80, protocol: HTTP}, {name: grpc, port: 9090, protocol: GRPC}, {name: echo, port: 7000, protocol: TCP}]
    endpoints: [{address: %s, ports: {http: 8080, grpc: 9090, echo: 7000}}]
  - name: frontend
    vip: %s
    meshed: true
    serviceAccount: frontend
    ports: [{name: http, port: 80, protocol: HTTP}]
    endpoints: [{address: %s, port: 8080}]
mtls:
  mode: %s
  services: {greeter: %s}
%s`, greeterVIP, m.greeterAccount, m.greeter.ip, frontendVIPSecure, m.frontend.ip, m.meshMode, greeterMode, policies)
}

func newSecuredMesh(t *testing.T, ctx context.Context) *securedMesh {
	t.Helper()
	m := &securedMesh{lab: newLab(t), sidecars: map[string]*process{}, greeterAccount: "greeter", meshMode: "PERMISSIVE"}
	m.cp = m.lab.addPod("cp", 2)
	m.greeter = m.lab.addPod("greeter", 11)
	m.frontend = m.lab.addPod("frontend", 15)
	m.client = m.lab.addPod("client", 20)
	m.plain = m.lab.addPod("plain", 30)
	m.rogue = m.lab.addPod("rogue", 31)
	m.dir = t.TempDir()
	// The sidecars run as 1337 and read their token and root from here.
	for _, d := range []string{filepath.Dir(m.dir), m.dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	m.meshFile = filepath.Join(m.dir, "mesh.yaml")
	m.caDir = filepath.Join(m.dir, "ca")
	m.tokensFile = filepath.Join(m.dir, "tokens")
	writeFile(t, m.meshFile, m.meshYAML("STRICT", ""))
	writeFile(t, m.tokensFile, "# token namespace service-account\ntok-greeter default greeter\ntok-frontend default frontend\ntok-client default client\n")
	for _, w := range []string{"greeter", "frontend", "client"} {
		writeFile(t, filepath.Join(m.dir, w+".token"), "tok-"+w+"\n")
	}
	writeFile(t, filepath.Join(m.dir, "rogue.token"), "tok-guessed\n")
	m.cpProc = m.cp.start(t, "controlplane", "controlplane", "--config-file", m.meshFile,
		"--xds-addr", "0.0.0.0:15010", "--xds-tls-addr", "0.0.0.0:15012", "--metrics-addr", "0.0.0.0:15014",
		"--ca-dir", m.caDir, "--bootstrap-tokens-file", m.tokensFile, "--log-format", "json", "--debounce", "50ms")
	m.cpProc.waitLog(ctx, "control plane starting")
	if err := os.Chmod(m.caDir, 0o755); err != nil {
		t.Fatal(err)
	}

	m.greeter.run(t, "sidecar", "init")
	m.greeter.start(t, "greeter", "greeter", "--instance", "greeter", "--http-addr", ":8080", "--grpc-addr", ":9090", "--tcp-echo-addr", ":7000")
	m.sidecars["greeter"] = m.startSidecar(t, m.greeter, "greeter")
	m.frontend.run(t, "sidecar", "init")
	m.frontend.start(t, "frontend", "greeter", "--instance", "frontend", "--http-addr", ":8080", "--grpc-addr", "",
		"--backend", "http://"+greeterVIP)
	m.sidecars["frontend"] = m.startSidecar(t, m.frontend, "frontend")
	m.client.run(t, "sidecar", "init")
	// The client's certificates live 6 s: renewed every 3 s.
	m.sidecars["client"] = m.startSidecar(t, m.client, "client", "--cert-ttl", "6s")
	for _, p := range []*pod{m.greeter, m.frontend, m.client} {
		waitPodHTTP(ctx, t, p, "http://127.0.0.1:15000/ready", 200)
	}
	m.greeterHTTP = "http://" + greeterVIP + "/greet?name=mesh-secret-marker"
	return m
}

func (m *securedMesh) startSidecar(t *testing.T, p *pod, sa string, extra ...string) *process {
	t.Helper()
	return p.startAs(t, proxyUID, "sidecar", "sidecar", append([]string{"run",
		"--xds-addr", cpIP + ":15012", "--xds-tls", "--ca-root-file", filepath.Join(m.caDir, "root-cert.pem"),
		"--token-file", filepath.Join(m.dir, sa+".token"), "--controlplane-identity", "spiffe://cluster.local/ns/tender-system/sa/tender-controlplane",
		"--pod-name", p.name, "--pod-namespace", "default", "--workload", sa, "--log-format", "json"}, extra...)...)
}

// setMesh rewrites mesh.yaml; the control plane picks it up.
func (m *securedMesh) setMesh(t *testing.T, greeterMode, policies string) {
	t.Helper()
	tmp := m.meshFile + ".tmp"
	writeFile(t, tmp, m.meshYAML(greeterMode, policies))
	if err := os.Rename(tmp, m.meshFile); err != nil {
		t.Fatal(err)
	}
}

// waitRefused waits until a plaintext client's GET of url is refused
// (a new connection each time).
func waitRefused(ctx context.Context, t *testing.T, c *http.Client, url, what string) {
	t.Helper()
	waitUntil(ctx, t, what, func() bool {
		resp, err := c.Get(url)
		if err == nil {
			resp.Body.Close()
		}
		c.CloseIdleConnections()
		return err != nil
	})
}

// logLine waits for a log line of p with message msg whose field holds
// substr; it returns the line's field.
func logLine(ctx context.Context, t *testing.T, p *process, msg, field, substr string) string {
	t.Helper()
	for {
		p.mu.Lock()
		for _, l := range p.lines {
			if v, _ := l[field].(string); l["msg"] == msg && strings.Contains(v, substr) {
				p.mu.Unlock()
				return v
			}
		}
		p.mu.Unlock()
		select {
		case <-ctx.Done():
			t.Fatalf("%s: no log line %q with %s containing %q; output:\n%s", p.name, msg, field, substr, p.output())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// podMetric sums the samples of a metric in a pod's sidecar whose labels
// contain every one of labels.
func podMetric(ctx context.Context, t *testing.T, p *pod, name string, labels ...string) float64 {
	t.Helper()
	body := string(waitPodHTTP(ctx, t, p, "http://127.0.0.1:15090/metrics", 200))
	var sum float64
	for _, line := range strings.Split(body, "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		ok := true
		for _, l := range labels {
			ok = ok && strings.Contains(line, l)
		}
		if !ok {
			continue
		}
		var v float64
		if _, err := fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &v); err == nil {
			sum += v
		}
	}
	return sum
}

// TestMutualTLS is the security issue's acceptance in the lab.
func TestMutualTLS(t *testing.T) {
	requireLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	m := newSecuredMesh(t, ctx)
	hc := m.client.httpClient(false)
	defer hc.CloseIdleConnections()

	t.Run("tls on the wire", func(t *testing.T) {
		capture := startCapture(t, m.lab.bridge, m.client.ip, m.greeter.ip, 8080)
		for range 5 {
			pollHTTP(ctx, t, hc, m.greeterHTTP, 200)
		}
		hc.CloseIdleConnections()
		seen := capture.stop()
		if seen.payload == 0 || !seen.handshake {
			t.Fatalf("capture saw %d payload bytes client→greeter, TLS handshake %v: want traffic that starts with a TLS handshake", seen.payload, seen.handshake)
		}
		if seen.plaintext != "" {
			t.Errorf("plaintext on the wire between the sidecars: %q", seen.plaintext)
		}
		t.Logf("capture: %d payload bytes client→greeter, %d TLS records, no plaintext", seen.payload, seen.records)
		if n := podMetric(ctx, t, m.greeter, "tender_requests_total", `direction="inbound"`,
			`source_principal="`+spiffeClient+`"`, `connection_security_policy="mutual_tls"`); n < 5 {
			t.Errorf("greeter's sidecar counted %v mutual-TLS requests from %s, want ≥ 5", n, spiffeClient)
		}
		if n := podMetric(ctx, t, m.client, "tender_requests_total", `direction="outbound"`,
			`destination_principal="spiffe://cluster.local/ns/default/sa/greeter"`); n < 5 {
			t.Errorf("client's sidecar counted %v requests to the greeter's identity, want ≥ 5", n)
		}
	})

	t.Run("server identity checked", func(t *testing.T) {
		// mesh.yaml now says the greeter's endpoint runs as frontend: the
		// greeter's sidecar, with a valid certificate of the mesh for
		// greeter, is an impostor to the client and gets no request.
		m.greeterAccount = "frontend"
		m.setMesh(t, "STRICT", "")
		hc.CloseIdleConnections()
		waitUntil(ctx, t, "the client refusing the greeter's identity", func() bool {
			resp, err := hc.Get(m.greeterHTTP)
			if err != nil {
				return false
			}
			resp.Body.Close()
			hc.CloseIdleConnections()
			return resp.StatusCode == http.StatusServiceUnavailable || resp.StatusCode == http.StatusBadGateway
		})
		logLine(ctx, t, m.sidecars["client"], "mTLS to upstream failed", "err",
			"server identity spiffe://cluster.local/ns/default/sa/greeter is not the destination's (spiffe://cluster.local/ns/default/sa/frontend)")
		m.greeterAccount = "greeter"
		m.setMesh(t, "STRICT", "")
		pollHTTP(ctx, t, hc, m.greeterHTTP, 200)
	})

	t.Run("a pod behind no service takes the mesh's mode", func(t *testing.T) {
		// The client pod has a sidecar and an app, and no service lists
		// it: its inbound side applies the mesh-wide mode, not none.
		m.client.start(t, "client-app", "greeter", "--instance", "unlisted", "--http-addr", ":8080", "--grpc-addr", "")
		plain := m.plain.httpClient(false)
		direct := "http://" + m.client.ip + ":8080/greet?name=plain"
		pollHTTP(ctx, t, plain, direct, 200) // PERMISSIVE mesh-wide
		plain.CloseIdleConnections()
		m.meshMode = "STRICT"
		m.setMesh(t, "STRICT", "")
		waitRefused(ctx, t, plain, direct, "plaintext refused by the unlisted pod")
		logLine(ctx, t, m.sidecars["client"], "plaintext connection refused: the destination takes mutual TLS only (STRICT)", "remote", m.plain.ip)
		m.meshMode = "PERMISSIVE"
		m.setMesh(t, "STRICT", "")
		pollHTTP(ctx, t, plain, direct, 200)
		plain.CloseIdleConnections()
	})

	t.Run("strict refuses plaintext, permissive serves it", func(t *testing.T) {
		plain := m.plain.httpClient(false)
		direct := "http://" + m.greeter.ip + ":8080/greet?name=plain"
		if resp, err := plain.Get(direct); err == nil {
			resp.Body.Close()
			t.Fatalf("STRICT greeter answered a plaintext client: %s", resp.Status)
		}
		logLine(ctx, t, m.sidecars["greeter"], "plaintext connection refused: the destination takes mutual TLS only (STRICT)", "remote", m.plain.ip)
		m.setMesh(t, "PERMISSIVE", "")
		pollHTTP(ctx, t, plain, direct, 200)
		plain.CloseIdleConnections()
		m.setMesh(t, "STRICT", "")
		waitRefused(ctx, t, plain, direct, "STRICT again")
	})

	t.Run("rotation under load", func(t *testing.T) {
		before := podMetric(ctx, t, m.client, "tender_workload_cert_renewals_total")
		stop := make(chan struct{})
		frontURL := "http://" + frontendVIPSecure + "/greet?name=rotation"
		log, done := loadWith(ctx, stop, 4, func() (string, error) {
			resp, err := hc.Get(frontURL)
			if err != nil {
				return "", err
			}
			defer resp.Body.Close()
			io.Copy(io.Discard, resp.Body) //nolint:errcheck // the status decides
			if resp.StatusCode != http.StatusOK {
				return "", fmt.Errorf("status %s", resp.Status)
			}
			return "ok", nil
		})
		// Long enough for the client's first certificate of the window to
		// expire: renewals every 3 s, each certificate lives 6 s.
		select {
		case <-time.After(10 * time.Second):
		case <-ctx.Done():
		}
		close(stop)
		<-done
		_, errs, n := log.snapshot()
		renewed := podMetric(ctx, t, m.client, "tender_workload_cert_renewals_total") - before
		t.Logf("rotation: %d requests, %d failed, %v renewals of the client's certificate", n, len(errs), renewed)
		if n < 100 || len(errs) > 0 {
			t.Errorf("got %d requests and %d failures (first: %v), want ≥ 100 and none", n, len(errs), firstErr(errs))
		}
		// Renewed at half life: every 3 s, so 3 or 4 times in 10 s.
		if renewed < 2 || renewed > 5 {
			t.Errorf("client certificate renewed %v times in 10 s, want 2 to 5 (at half life)", renewed)
		}
	})

	t.Run("root rotation", func(t *testing.T) {
		oldRoot, oldKey := readCA(t, m.caDir)
		stop := make(chan struct{})
		log, done := loadWith(ctx, stop, 2, func() (string, error) {
			resp, err := hc.Get("http://" + frontendVIPSecure + "/greet?name=root-rotation")
			if err != nil {
				return "", err
			}
			defer resp.Body.Close()
			io.Copy(io.Discard, resp.Body) //nolint:errcheck // the status decides
			if resp.StatusCode != http.StatusOK {
				return "", fmt.Errorf("status %s", resp.Status)
			}
			return "ok", nil
		})
		resp, err := m.cp.httpClient(false).Post("http://127.0.0.1:15014/debug/ca/rotate-root", "", nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body) //nolint:errcheck // the status decides
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("rotate-root: %s %s", resp.Status, body)
		}
		newRoot, newKey := readCA(t, m.caDir)
		if newRoot.SerialNumber.Cmp(oldRoot.SerialNumber) == 0 {
			t.Fatal("the stored root did not change")
		}
		newID := fmt.Sprintf("%x", newRoot.SubjectKeyId)
		// Every sidecar gets the bundle with both roots over SDS, and the
		// client's next certificate (6 s) comes from the new root.
		for _, p := range []*pod{m.client, m.frontend, m.greeter} {
			waitUntil(ctx, t, p.name+" trusting both roots", func() bool {
				body := string(waitPodHTTP(ctx, t, p, "http://127.0.0.1:15000/certs", 200))
				return strings.Count(body, `"keyId"`) == 2 && strings.Contains(body, newID)
			})
		}
		waitUntil(ctx, t, "the client's certificate from the new root", func() bool {
			body := string(waitPodHTTP(ctx, t, m.client, "http://127.0.0.1:15000/certs", 200))
			return strings.Contains(body, `"issuerKeyId":"`+newID+`"`)
		})
		// The greeter takes certificates of both roots: the overlap.
		for name, c := range map[string]tls.Certificate{
			"old root": leafCert(t, oldRoot, oldKey, "spiffe://cluster.local/ns/default/sa/tester", time.Hour),
			"new root": leafCert(t, newRoot, newKey, "spiffe://cluster.local/ns/default/sa/tester", time.Hour),
		} {
			if got := meshGet(ctx, t, m.plain, m.greeter.ip+":8080", c); !strings.Contains(got, "200 OK") {
				t.Errorf("a certificate of the %s: greeter answered %q, want 200", name, got)
			}
		}
		close(stop)
		<-done
		_, errs, n := log.snapshot()
		t.Logf("root rotation: %d requests during it, %d failed", n, len(errs))
		if n == 0 || len(errs) > 0 {
			t.Errorf("got %d requests and %d failures (first: %v) across the rotation, want some and none", n, len(errs), firstErr(errs))
		}
	})

	t.Run("expired and foreign certificates", func(t *testing.T) {
		rootCert, rootKey := readCA(t, m.caDir)
		cases := []struct {
			name, want string
			cert       tls.Certificate
		}{
			{"expired", "expired", leafCert(t, rootCert, rootKey, "spiffe://cluster.local/ns/default/sa/intruder", -2*time.Hour)},
			{"foreign CA", "unknown authority", leafCert(t, nil, nil, "spiffe://cluster.local/ns/default/sa/intruder", time.Hour)},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				if got := meshGet(ctx, t, m.plain, m.greeter.ip+":8080", tc.cert); strings.Contains(got, "HTTP/1.1") {
					t.Fatalf("greeter answered a %s certificate: %q", tc.name, got)
				}
				logLine(ctx, t, m.sidecars["greeter"], "mTLS handshake refused", "err", tc.want)
			})
		}
	})

	t.Run("authorization", func(t *testing.T) {
		policy := `authorization:
  - name: greeter-from-frontend
    services: [greeter]
    rules:
      - from: [{principals: ["` + spiffeFrontend + `"]}]
`
		m.setMesh(t, "STRICT", policy)
		waitUntil(ctx, t, "the client denied", func() bool {
			resp, err := hc.Get(m.greeterHTTP)
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == http.StatusForbidden
		})
		pollHTTP(ctx, t, hc, "http://"+frontendVIPSecure+"/greet?name=via-frontend", 200)
		gc := pb.NewGreeterClient(m.client.grpcConn(t, greeterVIP+":9090"))
		_, err := greet(ctx, gc)
		if status.Code(err) != codes.PermissionDenied {
			t.Errorf("gRPC from the client: got %v, want PERMISSION_DENIED", err)
		}
		if n := podMetric(ctx, t, m.greeter, "tender_authz_denied_total"); n < 2 {
			t.Errorf("greeter's sidecar counted %v denials, want ≥ 2 (HTTP and gRPC)", n)
		}
		logLine(ctx, t, m.sidecars["greeter"], "denied by authorization policy", "source_principal", spiffeClient)

		// Paths: the client may read /status/*, but not /status/500,
		// however the path is spelt: the policy sees the path the app
		// gets.
		m.setMesh(t, "STRICT", policy+`  - name: client-status
    services: [greeter]
    rules:
      - from: [{principals: ["`+spiffeClient+`"]}]
        to: [{methods: [GET], paths: ["/status/*"]}]
  - name: no-500
    services: [greeter]
    action: DENY
    rules:
      - to: [{paths: ["/status/500"]}]
`)
		base := "http://" + greeterVIP
		pollHTTP(ctx, t, hc, base+"/status/200", 200)
		// Not following redirects: the app's mux redirects an unclean path
		// to its clean form, which would hide what the policy let through.
		noRedirect := *hc
		noRedirect.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
		for path, want := range map[string]int{
			"/greet": 403, "/status/204": 204, "/status/500": 403, "//status/500": 403,
			"/status/x/../500": 403, "/./status/500": 403, "/status%2F500": 400,
		} {
			resp, err := noRedirect.Get(base + path)
			if err != nil {
				t.Errorf("GET %s: %v", path, err)
				continue
			}
			resp.Body.Close()
			if resp.StatusCode != want {
				t.Errorf("GET %s from the client: %s, want %d", path, resp.Status, want)
			}
		}
		m.setMesh(t, "STRICT", "")
		pollHTTP(ctx, t, hc, m.greeterHTTP, 200)
	})

	t.Run("wrong bootstrap token", func(t *testing.T) {
		p := m.startSidecar(t, m.rogue, "rogue")
		logLine(ctx, t, p, "workload certificate request failed", "err", "Unauthenticated")
		logLine(ctx, t, m.cpProc, "certificate refused", "reason", "unknown bootstrap token")
		resp, err := m.rogue.httpClient(false).Get("http://127.0.0.1:15000/ready")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Errorf("rogue sidecar /ready: %s, want 503 (no certificate)", resp.Status)
		}
		if n := podMetric(ctx, t, m.rogue, "tender_workload_cert_expiry_timestamp_seconds"); n != 0 {
			t.Errorf("rogue sidecar has a certificate expiring at %v", n)
		}
	})
}

// meshGet sends GET /greet to addr from pod p as a mesh client would:
// TLS 1.3 with cert and ALPN tender/http1.1. It returns the response (or
// the error) as text.
func meshGet(ctx context.Context, t *testing.T, p *pod, addr string, cert tls.Certificate) string {
	t.Helper()
	raw, err := p.dial(ctx, "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	raw.SetDeadline(time.Now().Add(10 * time.Second)) //nolint:errcheck // the reads below fail on their own
	c := tls.Client(raw, &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"tender/http1.1"},
		InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}) //nolint:gosec // the test is the client under test
	if _, err := c.Write([]byte("GET /greet?name=tester HTTP/1.1\r\nHost: greeter\r\nConnection: close\r\n\r\n")); err != nil {
		return err.Error()
	}
	b, err := io.ReadAll(c)
	if err != nil && len(b) == 0 {
		return err.Error()
	}
	return string(b)
}

func firstErr(errs []error) error {
	if len(errs) == 0 {
		return nil
	}
	return errs[0]
}

// readCA reads the self-made root the control plane keeps in dir.
func readCA(t *testing.T, dir string) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	certPEM, err := os.ReadFile(filepath.Join(dir, "root-cert.pem"))
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, "root-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	cb, _ := pem.Decode(certPEM)
	kb, _ := pem.Decode(keyPEM)
	if cb == nil || kb == nil {
		t.Fatal("root-cert.pem or root-key.pem holds no PEM")
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	var key any
	if key, err = x509.ParseECPrivateKey(kb.Bytes); err != nil {
		if key, err = x509.ParsePKCS8PrivateKey(kb.Bytes); err != nil {
			t.Fatal(err)
		}
	}
	ek, ok := key.(*ecdsa.PrivateKey)
	if !ok {
		t.Fatalf("root key is %T, want ECDSA", key)
	}
	return cert, ek
}

// leafCert makes a client certificate for id signed by parent (a fresh
// foreign CA when nil), valid until now+validFor (negative: expired).
func leafCert(t *testing.T, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, id string, validFor time.Duration) tls.Certificate {
	t.Helper()
	if parent == nil {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "foreign root"},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
			KeyUsage: x509.KeyUsageCertSign}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
		if err != nil {
			t.Fatal(err)
		}
		if parent, err = x509.ParseCertificate(der); err != nil {
			t.Fatal(err)
		}
		parentKey = k
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(id)
	if err != nil {
		t.Fatal(err)
	}
	notAfter := time.Now().Add(validFor)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), NotBefore: notAfter.Add(-24 * time.Hour), NotAfter: notAfter,
		URIs: []*url.URL{u}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// capture reads every frame on the lab's bridge namespace through a raw
// socket and keeps what went from one address to another's port.
type capture struct {
	fd   int
	done chan struct{}
	mu   sync.Mutex
	seen captured
	wg   sync.WaitGroup
}

type captured struct {
	payload   int    // TCP payload bytes from src to dst:port
	records   int    // of which start a TLS record
	handshake bool   // a TLS handshake record (ClientHello) was seen
	plaintext string // an HTTP request line or the marker, if seen
}

func startCapture(t *testing.T, ns, src, dst string, port uint16) *capture {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	self, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
	if err != nil {
		t.Fatal(err)
	}
	defer self.Close()
	target, err := os.Open("/run/netns/" + ns)
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		t.Fatal(err)
	}
	fd, sockErr := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, int(htons(unix.ETH_P_ALL)))
	if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
		t.Fatalf("restore network namespace: %v", err) // the thread stays locked and dies with the test
	}
	if sockErr != nil {
		t.Fatalf("raw socket: %v", sockErr)
	}
	tv := unix.Timeval{Usec: 100_000}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}
	c := &capture{fd: fd, done: make(chan struct{})}
	srcIP, dstIP := net.ParseIP(src).To4(), net.ParseIP(dst).To4()
	c.wg.Go(func() {
		buf := make([]byte, 65536)
		for {
			select {
			case <-c.done:
				return
			default:
			}
			n, from, err := unix.Recvfrom(fd, buf, 0)
			if err != nil {
				continue
			}
			// Each frame crosses two bridge ports: count it once, as it
			// leaves the bridge towards dst.
			if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype != unix.PACKET_OUTGOING {
				continue
			}
			c.add(buf[:n], srcIP, dstIP, port)
		}
	})
	t.Cleanup(func() { c.stop() })
	return c
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// add inspects one Ethernet frame.
func (c *capture) add(f []byte, src, dst net.IP, port uint16) {
	if len(f) < 14+20 || binary.BigEndian.Uint16(f[12:14]) != unix.ETH_P_IP {
		return
	}
	ip := f[14:]
	ihl := int(ip[0]&0x0f) * 4
	if ip[9] != unix.IPPROTO_TCP || len(ip) < ihl+20 || !bytes.Equal(ip[12:16], src) || !bytes.Equal(ip[16:20], dst) {
		return
	}
	total := int(binary.BigEndian.Uint16(ip[2:4]))
	if total > len(ip) {
		total = len(ip)
	}
	tcp := ip[ihl:total]
	if binary.BigEndian.Uint16(tcp[2:4]) != port {
		return
	}
	payload := tcp[int(tcp[12]>>4)*4:]
	if len(payload) == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seen.payload += len(payload)
	if payload[0] >= 0x14 && payload[0] <= 0x17 && len(payload) > 2 && payload[1] == 3 {
		c.seen.records++
		if payload[0] == 0x16 {
			c.seen.handshake = true
		}
	}
	for _, s := range []string{"GET /", "POST /", "HTTP/1.1", "mesh-secret-marker", "PRI * HTTP/2"} {
		if bytes.Contains(payload, []byte(s)) && c.seen.plaintext == "" {
			c.seen.plaintext = string(payload[:min(len(payload), 80)])
		}
	}
}

// stop ends the capture and returns what it saw.
func (c *capture) stop() captured {
	select {
	case <-c.done:
	default:
		close(c.done)
		c.wg.Wait()
		unix.Close(c.fd)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.seen
}
