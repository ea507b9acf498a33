// Command xdsload measures the control plane at scale: it runs the real
// controlplane binary over a mesh.yaml of many services, connects N
// simulated proxies (delta or state-of-the-world ADS clients that
// subscribe to every cluster and its endpoints and ACK what they get),
// changes one endpoint, and reports how long until the last proxy has
// the change, what each push cost on the wire, and the control plane's
// memory and CPU per connected proxy.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/tender-mesh/tender/bench/internal/procstat"
	"github.com/tender-mesh/tender/xds/xdsclient"
)

type options struct {
	bin       string
	clients   int
	services  int
	endpoints int
	mode      string
	subscribe int
	files     int
	changes   int
	debounce  time.Duration
	profile   string
}

func main() {
	var o options
	flag.StringVar(&o.bin, "controlplane", "bin/controlplane", "control plane binary")
	flag.IntVar(&o.clients, "clients", 1000, "simulated proxies")
	flag.IntVar(&o.services, "services", 1000, "services in the mesh")
	flag.IntVar(&o.endpoints, "endpoints", 10, "endpoints per service")
	flag.StringVar(&o.mode, "mode", "delta", "ADS flavour of the proxies: delta or sotw (every cluster and its endpoints, as a wildcard sidecar or Envoy), or ondemand (delta, each proxy subscribed to --subscribe services through their address indexes, as an on-demand sidecar)")
	flag.IntVar(&o.subscribe, "subscribe", 5, "with --mode ondemand: services each proxy uses")
	flag.IntVar(&o.files, "files", 1, "mesh.yaml files the services are spread over, in the directory the control plane reads (--config-file DIR): a change parses one file again")
	flag.IntVar(&o.changes, "changes", 5, "endpoint changes to time")
	flag.DurationVar(&o.debounce, "debounce", 10*time.Millisecond, "the control plane's --debounce (part of every measured push)")
	flag.StringVar(&o.profile, "profile", "", "file to write a CPU profile of the control plane during the timed changes to")
	md := flag.Bool("markdown", false, "print a markdown table row (after a header with -header)")
	header := flag.Bool("header", false, "with -markdown: print the table's header first")
	flag.Parse()
	res, err := run(o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "xdsload:", err)
		os.Exit(1)
	}
	if !*md {
		fmt.Println(res)
		return
	}
	if *header {
		fmt.Println("| ADS | proxies | services × endpoints | proxies using the changed service (others reached) | all synced after | change → last proxy p50 | p99 | max | control plane RSS idle → loaded (MiB) | RSS per proxy (KiB) | CPU per proxy connect (ms) | bytes per reached proxy per push | bytes per proxy at connect |")
		fmt.Println("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
	}
	r := res
	mode := o.mode
	if mode == "ondemand" {
		mode = fmt.Sprintf("on demand (%d services each)", o.subscribe)
	}
	files := ""
	if o.files > 1 {
		files = fmt.Sprintf(" in %d files", o.files)
	}
	fmt.Printf("| %s | %d | %d × %d%s | %d (%d) | %s | %s | %s | %s | %.1f → %.1f | %.1f | %.2f | %.0f | %.0f |\n", mode, o.clients, o.services, o.endpoints, files, r.reached, r.strays,
		r.connect.Round(time.Millisecond), r.p50.Round(time.Millisecond), r.p99.Round(time.Millisecond), r.max.Round(time.Millisecond),
		float64(r.idleRSS)/(1<<20), float64(r.loadedRSS)/(1<<20), float64(r.loadedRSS-r.idleRSS)/1024/float64(o.clients),
		float64(r.cpuPerClient.Microseconds())/1000, r.bytesPerPush, r.initialBytesPerClient)
}

// result is one run's numbers, printed as a line of key=value pairs.
type result struct {
	o                     options
	connect               time.Duration
	p50, p99, max         time.Duration
	idleRSS, loadedRSS    int64
	cpuPerClient          time.Duration
	bytesPerPush          float64
	initialBytesPerClient float64
	// reached counts the proxies that use the changed service (all but
	// on demand); strays the pushes that reached any other.
	reached, strays int
}

func (r result) String() string {
	return fmt.Sprintf("mode=%s clients=%d services=%d endpoints=%d connect_all=%s push_p50=%s push_p99=%s push_max=%s "+
		"cp_rss_idle_mib=%.1f cp_rss_mib=%.1f cp_rss_per_client_kib=%.1f cp_cpu_per_client_ms=%.2f push_bytes_per_client=%.0f initial_bytes_per_client=%.0f "+
		"proxies_reached=%d stray_pushes=%d",
		r.o.mode, r.o.clients, r.o.services, r.o.endpoints, r.connect.Round(time.Millisecond), r.p50.Round(time.Millisecond),
		r.p99.Round(time.Millisecond), r.max.Round(time.Millisecond), float64(r.idleRSS)/(1<<20), float64(r.loadedRSS)/(1<<20),
		float64(r.loadedRSS-r.idleRSS)/1024/float64(r.o.clients), float64(r.cpuPerClient.Microseconds())/1000,
		r.bytesPerPush, r.initialBytesPerClient, r.reached, r.strays)
}

// writeMesh writes the mesh: one mesh.yaml, or with --files the
// directory dir of that many files; after the first write (changed 0)
// only the file holding svc-0, whose first endpoint is the one that
// changes.
func writeMesh(dir string, o options, changed int) error {
	per := (o.services + o.files - 1) / o.files
	for f := range o.files {
		if changed > 0 && f > 0 {
			break
		}
		var b strings.Builder
		b.WriteString("services:\n")
		for s := f * per; s < min((f+1)*per, o.services); s++ {
			fmt.Fprintf(&b, "  - name: svc-%d\n    vip: %s\n    ports: [{name: http, port: 80, protocol: HTTP}]\n    endpoints:\n",
				s, vip(s))
			for e := range o.endpoints {
				last := e + 1
				if s == 0 && e == 0 {
					last = 100 + changed // the endpoint that changes
				}
				fmt.Fprintf(&b, "      - {address: 10.200.%d.%d, port: 8080}\n", s%250, last)
			}
		}
		path := filepath.Join(dir, fmt.Sprintf("mesh-%03d.yaml", f))
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, []byte(b.String()), 0o600); err != nil {
			return err
		}
		if err := os.Rename(tmp, path); err != nil {
			return err
		}
	}
	return nil
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func run(o options) (result, error) {
	r := result{o: o}
	if o.mode != "delta" && o.mode != "sotw" && o.mode != "ondemand" {
		return r, fmt.Errorf("--mode must be delta, sotw or ondemand, got %q", o.mode)
	}
	if o.files < 1 || o.files > o.services {
		return r, fmt.Errorf("--files must be 1 to --services, got %d", o.files)
	}
	if o.mode == "ondemand" && (o.subscribe < 1 || o.subscribe > o.services) {
		return r, fmt.Errorf("--subscribe must be 1 to --services, got %d", o.subscribe)
	}
	// Every proxy is a connection: raise the descriptor limit to the hard
	// one (the control plane inherits it).
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil && lim.Cur < lim.Max {
		lim.Cur = lim.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim) //nolint:errcheck // the run fails visibly if too low
	}
	dir, err := os.MkdirTemp("", "xdsload-")
	if err != nil {
		return r, err
	}
	defer os.RemoveAll(dir) //nolint:errcheck // a temporary directory
	mesh := filepath.Join(dir, "mesh")
	if err := os.Mkdir(mesh, 0o700); err != nil {
		return r, err
	}
	if err := writeMesh(mesh, o, 0); err != nil {
		return r, err
	}
	xdsAddr, err := freeAddr()
	if err != nil {
		return r, err
	}
	metricsAddr, err := freeAddr()
	if err != nil {
		return r, err
	}
	cp := exec.Command(o.bin, "--config-file", mesh, "--xds-addr", xdsAddr, "--metrics-addr", metricsAddr, "--xds-tls-addr", "",
		"--kubernetes", "off", "--debounce", o.debounce.String(), "--log-level", "warn")
	cp.Stderr = os.Stderr
	if err := cp.Start(); err != nil {
		return r, err
	}
	defer func() {
		cp.Process.Signal(syscall.SIGTERM) //nolint:errcheck // it may be gone
		cp.Wait()                          //nolint:errcheck // its exit status is not the measure
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	for {
		c, err := net.Dial("tcp", xdsAddr)
		if err == nil {
			c.Close()
			break
		}
		if ctx.Err() != nil {
			return r, fmt.Errorf("control plane did not listen on %s", xdsAddr)
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(time.Second)                        // the first snapshot
	cpu0, idle, _ := procstat.Read(cp.Process.Pid) //nolint:errcheck // zero if unreadable
	r.idleRSS = idle

	clients := make([]*client, o.clients)
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, o.clients)
	sem := make(chan struct{}, 64) // connects at once
	for i := range clients {
		clients[i] = &client{id: i, mode: o.mode, services: o.services, synced: make(chan struct{})}
		if o.mode == "ondemand" {
			clients[i].uses = usedServices(i, o)
		}
		wg.Add(1)
		sem <- struct{}{}
		go func(c *client) {
			defer wg.Done()
			err := c.connect(ctx, xdsAddr)
			<-sem
			if err != nil {
				errs <- err
				return
			}
			go func() {
				if err := c.loop(ctx); err != nil && ctx.Err() == nil {
					errs <- fmt.Errorf("proxy %d: %w", c.id, err)
				}
			}()
		}(clients[i])
	}
	wg.Wait()
	for _, c := range clients {
		select {
		case <-c.synced:
		case err := <-errs:
			return r, err
		case <-ctx.Done():
			return r, errors.New("proxies did not sync in time")
		}
	}
	r.connect = time.Since(start)
	var initial int64
	for _, c := range clients {
		initial += c.bytes.Load()
	}
	r.initialBytesPerClient = float64(initial) / float64(o.clients)
	time.Sleep(time.Second)
	cpu1, loaded, _ := procstat.Read(cp.Process.Pid) //nolint:errcheck // zero if unreadable
	r.loadedRSS = loaded
	r.cpuPerClient = (cpu1 - cpu0) / time.Duration(o.clients)

	profiled := make(chan error, 1)
	if o.profile != "" {
		go func() {
			// The changes take about a second and a half each at 1,000
			// proxies; the profile covers most of them.
			resp, err := http.Get(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", metricsAddr, 2*o.changes))
			if err != nil {
				profiled <- err
				return
			}
			defer resp.Body.Close()
			f, err := os.Create(o.profile)
			if err == nil {
				_, err = io.Copy(f, resp.Body)
				if cerr := f.Close(); err == nil {
					err = cerr
				}
			}
			profiled <- err
		}()
	} else {
		profiled <- nil
	}
	var lat []time.Duration
	var pushBytes int64
	for n := 1; n <= o.changes; n++ {
		before := make([]int64, len(clients))
		for i, c := range clients {
			c.changed.Store(0)
			before[i] = c.bytes.Load()
			c.epoch.Store(int64(n))
		}
		t0 := time.Now()
		if err := writeMesh(mesh, o, n); err != nil {
			return r, err
		}
		var last time.Duration
		for _, c := range clients {
			if !c.usesChanged() {
				continue
			}
			for c.changed.Load() == 0 {
				select {
				case err := <-errs:
					return r, err
				case <-ctx.Done():
					return r, fmt.Errorf("change %d did not reach proxy %d", n, c.id)
				case <-time.After(time.Millisecond):
				}
			}
			last = max(last, time.Duration(c.changed.Load()-t0.UnixNano()))
		}
		lat = append(lat, last)
		time.Sleep(200 * time.Millisecond) // stragglers' bytes
		for i, c := range clients {
			pushBytes += c.bytes.Load() - before[i]
			if !c.usesChanged() && c.changed.Load() != 0 {
				r.strays++
			}
		}
	}
	if err := <-profiled; err != nil {
		return r, fmt.Errorf("profile: %w", err)
	}
	slices.Sort(lat)
	r.p50, r.p99, r.max = lat[len(lat)/2], lat[min(len(lat)-1, len(lat)*99/100)], lat[len(lat)-1]
	for _, c := range clients {
		if c.usesChanged() {
			r.reached++
		}
	}
	r.bytesPerPush = float64(pushBytes) / float64(o.changes) / float64(r.reached)
	cancel()
	for _, c := range clients {
		c.conn.Close() //nolint:errcheck // the run is over
	}
	return r, nil
}

// client is one simulated proxy.
type client struct {
	id       int
	mode     string
	services int
	conn     *grpc.ClientConn
	sotw     discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	delta    discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesClient
	synced   chan struct{}
	once     sync.Once
	bytes    atomic.Int64
	epoch    atomic.Int64 // the change being timed
	changed  atomic.Int64 // unix nanos the current change arrived
	clusters []string
	// uses are the services an on-demand proxy uses; nil: all.
	uses []int
}

// usedServices are the services on-demand proxy i uses: --subscribe
// consecutive ones from 5i, so each service has about as many users.
func usedServices(i int, o options) []int {
	out := make([]int, o.subscribe)
	for k := range out {
		out[k] = (i*o.subscribe + k) % o.services
	}
	return out
}

// usesChanged reports whether the proxy uses svc-0, whose endpoint the
// run changes.
func (c *client) usesChanged() bool { return c.uses == nil || slices.Contains(c.uses, 0) }

// vip is service s's VIP in the generated mesh.
func vip(s int) string { return fmt.Sprintf("10.%d.%d.%d", 100+s/65536, s/256%256, s%256) }

func (c *client) node() *corev3.Node {
	return &corev3.Node{Id: fmt.Sprintf("load-%d.bench", c.id), Locality: &corev3.Locality{Zone: "z1"}}
}

func (c *client) connect(ctx context.Context, addr string) error {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(256<<20)))
	if err != nil {
		return err
	}
	c.conn = conn
	ads := discoveryv3.NewAggregatedDiscoveryServiceClient(conn)
	if c.mode == "delta" {
		c.delta, err = ads.DeltaAggregatedResources(ctx)
		if err != nil {
			return err
		}
		return c.delta.Send(&discoveryv3.DeltaDiscoveryRequest{Node: c.node(), TypeUrl: resource.ClusterType})
	}
	if c.mode == "ondemand" {
		c.delta, err = ads.DeltaAggregatedResources(ctx)
		if err != nil {
			return err
		}
		// What an on-demand sidecar asks for first: the mesh's defaults
		// and the indexes of the addresses it connects to.
		if err := c.delta.Send(&discoveryv3.DeltaDiscoveryRequest{Node: c.node(), TypeUrl: resource.ClusterType,
			ResourceNamesSubscribe: []string{xdsclient.MeshDefaultsCluster}}); err != nil {
			return err
		}
		names := make([]string, len(c.uses))
		for k, s := range c.uses {
			names[k] = xdsclient.AddressIndexName(netip.MustParseAddr(vip(s)))
		}
		return c.delta.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resource.RouteType, ResourceNamesSubscribe: names})
	}
	c.sotw, err = ads.StreamAggregatedResources(ctx)
	if err != nil {
		return err
	}
	return c.sotw.Send(&discoveryv3.DiscoveryRequest{Node: c.node(), TypeUrl: resource.ClusterType})
}

func (c *client) loop(ctx context.Context) error {
	switch c.mode {
	case "delta":
		return c.loopDelta(ctx)
	case "ondemand":
		return c.loopOnDemand(ctx)
	}
	return c.loopSotW(ctx)
}

// arrived records a push that carries endpoints after the first sync.
func (c *client) arrived() {
	if c.epoch.Load() > 0 && c.changed.Load() == 0 {
		c.changed.Store(time.Now().UnixNano())
	}
}

func (c *client) loopSotW(context.Context) error {
	edsVersion := ""
	for {
		resp, err := c.sotw.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		c.bytes.Add(int64(proto.Size(resp)))
		ack := &discoveryv3.DiscoveryRequest{TypeUrl: resp.GetTypeUrl(), VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce()}
		switch resp.GetTypeUrl() {
		case resource.ClusterType:
			if c.clusters == nil {
				c.clusters = clusterNames(c.services)
				if err := c.sotw.Send(ack); err != nil {
					return err
				}
				ack = &discoveryv3.DiscoveryRequest{TypeUrl: resource.EndpointType, ResourceNames: c.clusters}
			}
		case resource.EndpointType:
			if edsVersion != "" && resp.GetVersionInfo() != edsVersion {
				c.arrived()
			}
			edsVersion = resp.GetVersionInfo()
			ack.ResourceNames = c.clusters
			c.once.Do(func() { close(c.synced) })
		}
		if err := c.sotw.Send(ack); err != nil {
			return err
		}
	}
}

// recvDelta receives a delta response, counts it and ACKs it; nil and
// the error (nil at the stream's end) when the stream ended.
func (c *client) recvDelta() (*discoveryv3.DeltaDiscoveryResponse, error) {
	resp, err := c.delta.Recv()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		return nil, err
	}
	c.bytes.Add(int64(proto.Size(resp)))
	if err := c.delta.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resp.GetTypeUrl(), ResponseNonce: resp.GetNonce()}); err != nil {
		return nil, err
	}
	return resp, nil
}

func (c *client) loopDelta(context.Context) error {
	subscribed := false
	for {
		resp, err := c.recvDelta()
		if resp == nil {
			return err
		}
		switch resp.GetTypeUrl() {
		case resource.ClusterType:
			if !subscribed {
				subscribed = true
				if err := c.delta.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resource.EndpointType,
					ResourceNamesSubscribe: clusterNames(c.services)}); err != nil {
					return err
				}
			}
		case resource.EndpointType:
			select {
			case <-c.synced:
				c.arrived()
			default:
				close(c.synced)
			}
		}
	}
}

// loopOnDemand follows each index to the clusters it names, their
// endpoints and route configurations, as the sidecar's client does; the
// proxy is synced when it holds the endpoints of every service it uses.
func (c *client) loopOnDemand(context.Context) error {
	followed := map[string]bool{}
	endpoints := map[string]bool{}
	for {
		resp, err := c.recvDelta()
		if resp == nil {
			return err
		}
		switch resp.GetTypeUrl() {
		case resource.RouteType:
			var clusters, routes []string
			for _, r := range resp.GetResources() {
				rc := &routev3.RouteConfiguration{}
				if err := r.GetResource().UnmarshalTo(rc); err != nil {
					return err
				}
				if _, ok := xdsclient.ParseAddressIndexName(rc.GetName()); !ok {
					continue
				}
				names, err := xdsclient.IndexClusters(rc)
				if err != nil {
					return err
				}
				for _, n := range names {
					if !followed[n] {
						followed[n] = true
						clusters = append(clusters, n)
						_, host, _ := strings.Cut(strings.TrimPrefix(n, "outbound|"), "||")
						routes = append(routes, host+":80")
					}
				}
			}
			if len(clusters) == 0 {
				continue
			}
			for _, req := range []*discoveryv3.DeltaDiscoveryRequest{
				{TypeUrl: resource.ClusterType, ResourceNamesSubscribe: clusters},
				{TypeUrl: resource.EndpointType, ResourceNamesSubscribe: clusters},
				{TypeUrl: resource.RouteType, ResourceNamesSubscribe: routes},
			} {
				if err := c.delta.Send(req); err != nil {
					return err
				}
			}
		case resource.EndpointType:
			select {
			case <-c.synced:
				c.arrived()
				continue
			default:
			}
			for _, r := range resp.GetResources() {
				endpoints[r.GetName()] = true
			}
			if len(endpoints) >= len(c.uses) {
				close(c.synced)
			}
		}
	}
}

// clusterNames are the clusters of the generated mesh (tender names a
// service port's cluster outbound|PORT||NAME.NAMESPACE.svc.cluster.local).
func clusterNames(services int) []string {
	out := make([]string, 0, services)
	for s := range services {
		out = append(out, fmt.Sprintf("outbound|80||svc-%d.default.svc.cluster.local", s))
	}
	return out
}
