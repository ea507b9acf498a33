package proxy

import (
	"context"
	"io"
	"log"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tender-mesh/tender/proxy/balancer"
)

// sharedListener lets two servers accept from one socket; closing it
// (as Shutdown does) stops only the server that closes it.
type sharedListener struct {
	net.Listener
	done chan struct{}
	once sync.Once
}

func (l *sharedListener) Accept() (net.Conn, error) {
	select {
	case <-l.done:
		return nil, net.ErrClosed
	default:
	}
	return l.Listener.Accept()
}

func (l *sharedListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

// TestH2UpstreamGoAway: an upstream server that shuts down gracefully
// (GOAWAY) while requests stream through loses none: those in flight
// finish, the next go on a new connection.
func TestH2UpstreamGoAway(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body) //nolint:errcheck // the test's upstream
		time.Sleep(2 * time.Millisecond)
		io.WriteString(w, "ok") //nolint:errcheck // the test's upstream
	})
	serve := func() *http.Server {
		s := &http.Server{Handler: handler, Protocols: new(http.Protocols), ErrorLog: log.New(io.Discard, "", 0)}
		s.Protocols.SetUnencryptedHTTP2(true)
		go s.Serve(&sharedListener{Listener: lis, done: make(chan struct{})}) //nolint:errcheck // ends with the test
		return s
	}
	first := serve()
	ep := &balancer.Endpoint{Addr: netip.MustParseAddrPort(lis.Addr().String()), Stats: &balancer.Stats{}, Healthy: true, Weight: 1}
	picker, err := balancer.New("ROUND_ROBIN", []*balancer.Endpoint{ep}, balancer.Locality{})
	if err != nil {
		t.Fatal(err)
	}
	tp := startProxy(t, &Cluster{Name: "test", Host: "greeter.default.svc.cluster.local", Endpoints: []*balancer.Endpoint{ep}, Picker: picker})
	client := tp.h2client()
	var sent, failed atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				sent.Add(1)
				resp, err := client.Get("http://greeter/")
				if err != nil {
					failed.Add(1)
					t.Log(err)
					continue
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK || string(body) != "ok" {
					failed.Add(1)
					t.Logf("got %d %q", resp.StatusCode, body)
				}
			}
		})
	}
	time.Sleep(300 * time.Millisecond)
	second := serve() // from now on, new connections may land here
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err = first.Shutdown(ctx) // GOAWAY to every connection of the first
	time.Sleep(300 * time.Millisecond)
	close(stop)
	wg.Wait()
	lis.Close() // before Close: the servers' Accept must return
	second.Close()
	if err != nil {
		t.Errorf("the upstream did not drain: %v", err)
	}
	if failed.Load() != 0 || sent.Load() < 50 {
		t.Errorf("%d of %d requests failed across the upstream's GOAWAY, want 0 (of at least 50)", failed.Load(), sent.Load())
	}
}
