package eureka_test

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tender-mesh/tender/discovery"
	"github.com/tender-mesh/tender/discovery/eureka"
	"github.com/tender-mesh/tender/discovery/eureka/eurekatest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// sink records what the source reports.
type sink struct {
	mu      sync.Mutex // guards the fields below
	last    []discovery.Service
	updates int
	errs    []error
}

func (s *sink) Update(_ string, svcs []discovery.Service) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.last, s.updates = svcs, s.updates+1
}

func (s *sink) ReportError(_ string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.errs = append(s.errs, err)
}

func (s *sink) state() ([]discovery.Service, int, []error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last, s.updates, append([]error(nil), s.errs...)
}

// wait polls cond over the sink's state until it holds, or fails the test
// after 10 s.
func (s *sink) wait(t *testing.T, what string, cond func(last []discovery.Service, updates int, errs []error) bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		last, n, errs := s.state()
		if cond(last, n, errs) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; last report %+v (%d updates), errors %v", what, last, n, errs)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// endpoints is a service's endpoints as "ID=HEALTH", in order.
func endpoints(svcs []discovery.Service, name string) string {
	for _, s := range svcs {
		if s.Name == name {
			var out []string
			for _, e := range s.Endpoints {
				out = append(out, e.Labels["eureka_instance_id"]+"="+e.Health.String())
			}
			return strings.Join(out, ",")
		}
	}
	return "<none>"
}

// call sends one request to the Eureka API under base and checks the
// answer's status.
func call(t *testing.T, method, url string, body any, want int) {
	t.Helper()
	var b []byte
	if body != nil {
		b, _ = json.Marshal(body)
	}
	req, err := http.NewRequest(method, url, bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != want {
		t.Fatalf("%s %s: got %s, want %d", method, url, resp.Status, want)
	}
}

// register registers instance id of app at ip:port, as a Spring service
// would.
func register(t *testing.T, base, app, id, ip string, port int) {
	t.Helper()
	call(t, http.MethodPost, base+"/apps/"+app, map[string]any{"instance": map[string]any{
		"instanceId": id, "hostName": id + ".local", "app": app, "ipAddr": ip, "status": "UP",
		"port": map[string]any{"$": port, "@enabled": "true"}, "vipAddress": strings.ToLower(app),
		"dataCenterInfo": map[string]any{"@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo", "name": "MyOwn"},
		"leaseInfo":      map[string]any{"renewalIntervalInSecs": 30, "durationInSecs": 90},
	}}, http.StatusNoContent)
}

func start(t *testing.T, o eurekatest.Options) *eurekatest.Server {
	t.Helper()
	srv := eurekatest.New(o)
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	return srv
}

// runOne registers one greeter instance, g1, at base and runs the source
// on base until it reports it.
func runOne(t *testing.T, base string) *sink {
	t.Helper()
	register(t, base, "GREETER", "g1", "127.0.0.1", 9001)
	s := run(t, eureka.Options{URLs: []string{base}})
	s.wait(t, "the registry", func(last []discovery.Service, _ int, _ []error) bool {
		return endpoints(last, "greeter") == "g1=HEALTHY"
	})
	return s
}

// run runs a source until the test ends.
func run(t *testing.T, o eureka.Options) *sink {
	t.Helper()
	if o.Refresh == 0 {
		o.Refresh = 20 * time.Millisecond
	}
	src, err := eureka.New(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	s := &sink{}
	go func() { done <- src.Run(ctx, s) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return s
}

// TestDeltas: a full fetch, then deltas; an override drains an instance,
// DOWN is not served; a delta that lost its change does not reconcile and
// a full fetch repairs the registry; a cancel removes the instance.
func TestDeltas(t *testing.T) {
	for _, single := range []bool{false, true} {
		t.Run(fmt.Sprintf("single=%v", single), func(t *testing.T) {
			srv := start(t, eurekatest.Options{Single: single})
			base := srv.URL()
			register(t, base, "GREETER", "g1", "127.0.0.1", 9001)
			register(t, base, "GREETER", "g2", "127.0.0.2", 9002)
			s := run(t, eureka.Options{URLs: []string{base}})
			s.wait(t, "both instances", func(last []discovery.Service, _ int, _ []error) bool {
				return endpoints(last, "greeter") == "g1=HEALTHY,g2=HEALTHY"
			})

			call(t, http.MethodPut, base+"/apps/GREETER/g2/status?value=OUT_OF_SERVICE", nil, http.StatusOK)
			s.wait(t, "g2 draining", func(last []discovery.Service, _ int, _ []error) bool {
				return endpoints(last, "greeter") == "g1=HEALTHY,g2=DRAINING"
			})
			call(t, http.MethodPut, base+"/apps/GREETER/g1/status?value=DOWN", nil, http.StatusOK)
			s.wait(t, "g1 not served", func(last []discovery.Service, _ int, _ []error) bool {
				return endpoints(last, "greeter") == "g2=DRAINING"
			})
			if full, delta := srv.Fetches(); full != 1 || delta == 0 {
				t.Errorf("fetches: %d full and %d delta, want 1 full and then deltas", full, delta)
			}

			// The next delta loses the change; its hash does not match.
			srv.LoseNextDelta("tender-controlplane")
			call(t, http.MethodDelete, base+"/apps/GREETER/g1/status?value=UP", nil, http.StatusOK)
			s.wait(t, "g1 back after a full fetch", func(last []discovery.Service, _ int, _ []error) bool {
				return endpoints(last, "greeter") == "g1=HEALTHY,g2=DRAINING"
			})
			if full, _ := srv.Fetches(); full != 2 {
				t.Errorf("%d full fetches, want 2: one at the start, one for the delta that did not reconcile", full)
			}

			call(t, http.MethodDelete, base+"/apps/GREETER/g2", nil, http.StatusOK)
			s.wait(t, "g2 gone", func(last []discovery.Service, _ int, _ []error) bool {
				return endpoints(last, "greeter") == "g1=HEALTHY"
			})
			call(t, http.MethodDelete, base+"/apps/GREETER/g1", nil, http.StatusOK)
			s.wait(t, "the service gone", func(last []discovery.Service, _ int, _ []error) bool {
				return len(last) == 0
			})
			if _, _, errs := s.state(); len(errs) > 0 {
				t.Errorf("errors reported: %v", errs)
			}
		})
	}
}

// TestLeaseExpiry: an instance that stops renewing goes when its lease
// expires.
func TestLeaseExpiry(t *testing.T) {
	srv := start(t, eurekatest.Options{})
	base := srv.URL()
	call(t, http.MethodPost, base+"/apps/GREETER", map[string]any{"instance": map[string]any{
		"instanceId": "g1", "hostName": "g1", "app": "GREETER", "ipAddr": "127.0.0.1", "port": 9001,
		"dataCenterInfo": map[string]any{"name": "MyOwn"}, "leaseInfo": map[string]any{"durationInSecs": 1},
	}}, http.StatusNoContent)
	register(t, base, "GREETER", "g2", "127.0.0.2", 9002)
	s := run(t, eureka.Options{URLs: []string{base}})
	s.wait(t, "both instances", func(last []discovery.Service, _ int, _ []error) bool {
		return endpoints(last, "greeter") == "g1=HEALTHY,g2=HEALTHY"
	})
	s.wait(t, "g1's lease to expire", func(last []discovery.Service, _ int, _ []error) bool {
		return endpoints(last, "greeter") == "g2=HEALTHY"
	})
}

// TestFailover: servers are tried in order; with all of them down the
// last registry stays, the error names every URL, and the source resumes
// when one answers.
func TestFailover(t *testing.T) {
	a, b := start(t, eurekatest.Options{}), start(t, eurekatest.Options{Single: true})
	for _, srv := range []*eurekatest.Server{a, b} {
		register(t, srv.URL(), "GREETER", "g1", "127.0.0.1", 9001)
	}
	register(t, b.URL(), "GREETER", "g2", "127.0.0.2", 9002) // b knows more
	s := run(t, eureka.Options{URLs: []string{a.URL(), b.URL()}})
	s.wait(t, "a's registry", func(last []discovery.Service, _ int, _ []error) bool {
		return endpoints(last, "greeter") == "g1=HEALTHY"
	})
	a.Stop()
	s.wait(t, "b's registry", func(last []discovery.Service, _ int, _ []error) bool {
		return endpoints(last, "greeter") == "g1=HEALTHY,g2=HEALTHY"
	})
	if _, _, errs := s.state(); len(errs) > 0 {
		t.Errorf("a failover that worked reported errors: %v", errs)
	}
	b.Stop()
	s.wait(t, "an error", func(_ []discovery.Service, _ int, errs []error) bool { return len(errs) > 0 })
	last, updates, errs := s.state()
	if endpoints(last, "greeter") != "g1=HEALTHY,g2=HEALTHY" {
		t.Errorf("with every server down the source reported %+v, want the last registry kept", last)
	}
	for _, u := range []string{a.URL(), b.URL()} {
		if !strings.Contains(errs[0].Error(), u+"/apps") {
			t.Errorf("error %q does not name %s", errs[0], u)
		}
	}
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	s.wait(t, "a again", func(last []discovery.Service, n int, _ []error) bool {
		return n > updates && endpoints(last, "greeter") == "g1=HEALTHY"
	})
}

// TestMalformed: an answer that is not a registry is an error naming the
// server, and the last good registry stays.
func TestMalformed(t *testing.T) {
	srv := eurekatest.New(eurekatest.Options{})
	var broken atomic.Value
	broken.Store("")
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if b := broken.Load().(string); b != "" {
			w.Write([]byte(b))
			return
		}
		srv.ServeHTTP(w, r)
	}))
	defer ts.Close()
	base := ts.URL + "/eureka"
	s := runOne(t, base)
	for _, body := range []string{`{"applications":{"application":{"instance":{"port":{"$":"x"}}}}}`, `<html>`, `{}`} {
		broken.Store(body)
		_, _, before := s.state()
		s.wait(t, "an error for "+body, func(_ []discovery.Service, _ int, errs []error) bool { return len(errs) > len(before) })
		_, _, errs := s.state()
		if err := errs[len(errs)-1]; !errors.Is(err, eureka.ErrMalformed) || !strings.Contains(err.Error(), base+"/apps") {
			t.Errorf("answer %s: error %v, want ErrMalformed naming %s", body, err, base)
		}
		if last, _, _ := s.state(); endpoints(last, "greeter") != "g1=HEALTHY" {
			t.Errorf("answer %s: reported %+v, want the last registry kept", body, last)
		}
	}
}

// TestBadDelta: a delta answer that is not a registry is followed by a
// full fetch from the same server, and no error is reported.
func TestBadDelta(t *testing.T) {
	srv := eurekatest.New(eurekatest.Options{})
	var fulls atomic.Int32
	var broken atomic.Bool
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasSuffix(r.URL.Path, "/apps/delta") && broken.Load():
			w.Write([]byte(`{"applications":{"application":[{"instance":[{"instanceId":"g1","actionType":"MOVED"}]}]}}`))
			return
		case strings.HasSuffix(r.URL.Path, "/apps"):
			fulls.Add(1)
		}
		srv.ServeHTTP(w, r)
	}))
	defer ts.Close()
	base := ts.URL + "/eureka"
	s := runOne(t, base)
	broken.Store(true)
	register(t, base, "GREETER", "g2", "127.0.0.2", 9002)
	s.wait(t, "g2 through a full fetch", func(last []discovery.Service, _ int, _ []error) bool {
		return endpoints(last, "greeter") == "g1=HEALTHY,g2=HEALTHY"
	})
	if n := fulls.Load(); n < 2 {
		t.Errorf("%d full fetches, want one more after the bad delta", n)
	}
	if _, _, errs := s.state(); len(errs) > 0 {
		t.Errorf("errors reported although the full fetch worked: %v", errs)
	}
}

// TestAuthAndTLS: basic auth from the URL and from files, over TLS
// verified with a CA file.
func TestAuthAndTLS(t *testing.T) {
	srv := eurekatest.New(eurekatest.Options{Username: "tender", Password: "s3cret:x"})
	ts := httptest.NewTLSServer(srv)
	defer ts.Close()
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ts.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	user, pass := filepath.Join(dir, "username"), filepath.Join(dir, "password")
	os.WriteFile(user, []byte("tender\n"), 0o600)
	os.WriteFile(pass, []byte("s3cret:x\n"), 0o600)
	host := strings.TrimPrefix(ts.URL, "https://")

	// Register through the emulation's handler directly.
	reg := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.SetBasicAuth("tender", "s3cret:x")
		srv.ServeHTTP(w, r)
	}))
	defer reg.Close()
	register(t, reg.URL+"/eureka", "GREETER", "g1", "127.0.0.1", 9001)

	for _, tt := range []struct {
		name string
		opts eureka.Options
		ok   bool
	}{
		{"credentials in the URL", eureka.Options{URLs: []string{"https://tender:s3cret%3Ax@" + host + "/eureka"}, CAFile: ca}, true},
		{"credentials from files", eureka.Options{URLs: []string{"https://" + host + "/eureka"}, CAFile: ca, UsernameFile: user, PasswordFile: pass}, true},
		{"no credentials", eureka.Options{URLs: []string{"https://" + host + "/eureka"}, CAFile: ca}, false},
		{"no CA", eureka.Options{URLs: []string{"https://tender:s3cret%3Ax@" + host + "/eureka"}}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := run(t, tt.opts)
			s.wait(t, "a report", func(last []discovery.Service, n int, errs []error) bool { return n > 0 || len(errs) > 0 })
			last, _, errs := s.state()
			if tt.ok && (len(errs) > 0 || endpoints(last, "greeter") != "g1=HEALTHY") {
				t.Errorf("got %+v, errors %v; want g1", last, errs)
			}
			if !tt.ok && len(errs) == 0 {
				t.Errorf("got %+v and no error", last)
			}
			for _, err := range errs {
				if strings.Contains(err.Error(), "s3cret") {
					t.Errorf("an error shows the password: %v", err)
				}
			}
		})
	}
}
