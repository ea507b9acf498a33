package kube

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	gwclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/tender-mesh/tender/discovery"
	"github.com/tender-mesh/tender/inject"
)

// Name is the source's name in the registry.
const Name = "kubernetes"

// EventReasonInvalidAnnotation is the reason of the Warning Event a
// Service gets for a tender.dev/ annotation the control plane ignored.
const EventReasonInvalidAnnotation = "InvalidAnnotation"

// Options configure the Kubernetes source.
type Options struct {
	Client kubernetes.Interface
	// Gateway reads the Gateway API's HTTPRoutes and GRPCRoutes, when
	// the API server serves them and the sink takes routes
	// (discovery.RouteSink); nil: no routes.
	Gateway gwclient.Interface
	// Namespaces to watch; empty watches all.
	Namespaces []string
	// Resync re-delivers every object this often, so a missed update
	// heals; 0 turns it off.
	Resync time.Duration
	// MinInterval is the least time between two rebuilds, so a burst of
	// changes costs one; default 50 ms.
	MinInterval time.Duration
	// Component names the control plane in the Events it records.
	Component string
	Logger    *slog.Logger
}

// Source watches Services, EndpointSlices, Pods (for their labels) and
// Nodes (for their region) through informers, and the Gateway API's
// HTTPRoutes and GRPCRoutes when the cluster has them. Several control
// planes can watch at once: the source only reads, and records Events.
type Source struct {
	opts Options
	// builds counts the services built, for tests to see what an event
	// costs.
	builds atomic.Int64
}

// New returns a source; Run starts it.
func New(opts Options) (*Source, error) {
	if opts.Client == nil {
		return nil, errors.New("kubernetes source: no client")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.MinInterval <= 0 {
		opts.MinInterval = 50 * time.Millisecond
	}
	if opts.Component == "" {
		opts.Component = "tender-controlplane"
	}
	return &Source{opts: opts}, nil
}

// Name implements discovery.Source.
func (s *Source) Name() string { return Name }

const (
	byService = "service"
	byPod     = "pod"
)

// podKeys indexes EndpointSlices by the pods their endpoints name
// (NAMESPACE/NAME), so a pod's change finds the services it is in.
func podKeys(obj any) ([]string, error) {
	es, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok {
		return nil, nil
	}
	var out []string
	for _, e := range es.Endpoints {
		if ref := e.TargetRef; ref != nil && ref.Kind == "Pod" {
			out = append(out, cmp.Or(ref.Namespace, es.Namespace)+"/"+ref.Name)
		}
	}
	return out, nil
}

// dirtySet is what the informers' events marked for the next rebuild:
// service keys, or all of them.
type dirtySet struct {
	mu   sync.Mutex
	keys map[string]bool
	all  bool
}

func (d *dirtySet) mark(keys ...string) {
	d.mu.Lock()
	for _, k := range keys {
		d.keys[k] = true
	}
	d.mu.Unlock()
}

func (d *dirtySet) markAll() {
	d.mu.Lock()
	d.all = true
	d.mu.Unlock()
}

// take returns what was marked, sorted, and clears it.
func (d *dirtySet) take() (keys []string, all bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	keys = slices.Sorted(maps.Keys(d.keys))
	clear(d.keys)
	all, d.all = d.all, false
	return keys, all
}

// handler calls f with the object of every add, update (the new object;
// the old one too when it differs in what f reads is f's to mark: both
// are passed) and delete, a tombstone unwrapped.
func handler(f func(obj any)) cache.ResourceEventHandler {
	return cache.ResourceEventHandlerFuncs{
		AddFunc: f,
		UpdateFunc: func(old, cur any) {
			f(old)
			f(cur)
		},
		DeleteFunc: func(obj any) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			f(obj)
		},
	}
}

// setFor is the informers watching namespace ns.
func setFor(sets []watched, namespaces []string, ns string) (watched, bool) {
	for i, n := range namespaces {
		if n == metav1.NamespaceAll || n == ns {
			return sets[i], true
		}
	}
	return watched{}, false
}

// serviceKey indexes EndpointSlices by the Service they belong to.
func serviceKey(obj any) ([]string, error) {
	es, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok {
		return nil, nil
	}
	name := es.Labels[discoveryv1.LabelServiceName]
	if name == "" {
		return nil, nil
	}
	return []string{es.Namespace + "/" + name}, nil
}

// slim keeps only what the source reads of pods and nodes, so a big
// cluster costs the control plane little memory.
func slim(obj any) (any, error) {
	switch o := obj.(type) {
	case *corev1.Pod:
		var ann map[string]string
		if v, ok := o.Annotations[AnnotationSidecarStatus]; ok {
			ann = map[string]string{AnnotationSidecarStatus: v}
		}
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: o.Name, Namespace: o.Namespace, Labels: o.Labels,
			Annotations: ann, ResourceVersion: o.ResourceVersion},
			Spec:   corev1.PodSpec{ServiceAccountName: o.Spec.ServiceAccountName, NodeName: o.Spec.NodeName},
			Status: corev1.PodStatus{PodIPs: o.Status.PodIPs}}, nil
	case *corev1.Node:
		return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: o.Name, Labels: o.Labels, ResourceVersion: o.ResourceVersion}}, nil
	}
	return obj, nil
}

// factory is what Run does with an informer factory, of client-go's
// informers or of the Gateway API's.
type factory interface {
	Start(stopCh <-chan struct{})
	Shutdown()
}

type watched struct {
	services, slices, pods cache.SharedIndexInformer
}

// Run watches until ctx ends. It reports once every informer has synced,
// then after every change (at most every MinInterval).
func (s *Source) Run(ctx context.Context, sink discovery.Sink) error {
	log := s.opts.Logger
	broadcaster := record.NewBroadcaster(record.WithContext(ctx))
	defer broadcaster.Shutdown()
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: s.opts.Client.CoreV1().Events("")})
	recorder := broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: s.opts.Component})

	// Each event marks the services it touches; a rebuild builds only
	// those (a pod's status change rebuilds its own services, not the
	// cluster's), as linkerd2's destination watchers do.
	kick := make(chan struct{}, 1)
	dirty := &dirtySet{keys: map[string]bool{}, all: true}
	var sets []watched
	mark := func(keys ...string) {
		dirty.mark(keys...)
		signal(kick)
	}
	onService := handler(func(obj any) {
		if svc, ok := obj.(*corev1.Service); ok {
			mark(svc.Namespace + "/" + svc.Name)
		}
	})
	onSlice := handler(func(obj any) {
		keys, _ := serviceKey(obj)
		mark(keys...)
	})
	// Where meshed pods run: a kick of its own, and only a sink that takes
	// it gets it.
	localityKick := make(chan struct{}, 1)
	localitySink, takesLocalities := sink.(discovery.LocalitySink)
	onPod := handler(func(obj any) {
		p, ok := obj.(*corev1.Pod)
		if !ok {
			return
		}
		if takesLocalities && p.Spec.NodeName != "" {
			signal(localityKick)
		}
		for _, w := range sets {
			objs, _ := w.slices.GetIndexer().ByIndex(byPod, p.Namespace+"/"+p.Name)
			for _, o := range objs {
				keys, _ := serviceKey(o)
				mark(keys...)
			}
		}
	})
	// A node's region names its endpoints' locality: a change to it may
	// touch any service; other node changes (status, every few seconds)
	// touch none.
	nodeRegion := func(obj any) string {
		if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		if n, ok := obj.(*corev1.Node); ok {
			return n.Labels[corev1.LabelTopologyRegion]
		}
		return ""
	}
	regionChanged := func() {
		dirty.markAll()
		signal(kick)
	}
	topologyOf := func(obj any) discovery.Locality {
		if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		n, _ := obj.(*corev1.Node)
		return nodeLocality(n)
	}
	onNode := cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			if nodeRegion(obj) != "" {
				regionChanged()
			}
			if takesLocalities && topologyOf(obj) != (discovery.Locality{}) {
				signal(localityKick)
			}
		},
		UpdateFunc: func(old, cur any) {
			if nodeRegion(old) != nodeRegion(cur) {
				regionChanged()
			}
			if takesLocalities && topologyOf(old) != topologyOf(cur) {
				signal(localityKick)
			}
		},
		DeleteFunc: func(obj any) {
			if nodeRegion(obj) != "" {
				regionChanged()
			}
			if takesLocalities && topologyOf(obj) != (discovery.Locality{}) {
				signal(localityKick)
			}
		},
	}
	namespaces := s.opts.Namespaces
	if len(namespaces) == 0 {
		namespaces = []string{metav1.NamespaceAll}
	}
	var factories []factory
	var synced []cache.InformerSynced
	for _, ns := range namespaces {
		f := informers.NewSharedInformerFactoryWithOptions(s.opts.Client, s.opts.Resync, informers.WithNamespace(ns))
		w := watched{
			services: f.Core().V1().Services().Informer(),
			slices:   f.Discovery().V1().EndpointSlices().Informer(),
			pods:     f.Core().V1().Pods().Informer(),
		}
		if err := w.slices.AddIndexers(cache.Indexers{byService: serviceKey, byPod: podKeys}); err != nil {
			return fmt.Errorf("kubernetes source: %w", err)
		}
		if err := w.pods.SetTransform(slim); err != nil {
			return fmt.Errorf("kubernetes source: %w", err)
		}
		for _, x := range []struct {
			inf cache.SharedIndexInformer
			h   cache.ResourceEventHandler
		}{{w.services, onService}, {w.slices, onSlice}, {w.pods, onPod}} {
			if _, err := x.inf.AddEventHandler(x.h); err != nil {
				return fmt.Errorf("kubernetes source: %w", err)
			}
			synced = append(synced, x.inf.HasSynced)
		}
		factories, sets = append(factories, f), append(sets, w)
	}
	// Nodes are cluster-wide: one informer, for their region label.
	nf := informers.NewSharedInformerFactory(s.opts.Client, s.opts.Resync)
	nodes := nf.Core().V1().Nodes().Informer()
	if err := nodes.SetTransform(slim); err != nil {
		return fmt.Errorf("kubernetes source: %w", err)
	}
	if _, err := nodes.AddEventHandler(onNode); err != nil {
		return fmt.Errorf("kubernetes source: %w", err)
	}
	synced = append(synced, nodes.HasSynced)
	factories = append(factories, nf)
	// Routes have a kick of their own: most changes are to endpoints,
	// which need no new copy of every route.
	routeKick := make(chan struct{}, 1)
	var routes *routeWatch
	routeSink, takesRoutes := sink.(discovery.RouteSink)
	if takesRoutes {
		var err error
		routes, err = s.watchRoutes(namespaces, cache.ResourceEventHandlerFuncs{
			AddFunc:    func(any) { signal(routeKick) },
			UpdateFunc: func(any, any) { signal(routeKick) },
			DeleteFunc: func(any) { signal(routeKick) },
		})
		if err != nil {
			return err
		}
	}
	if routes != nil {
		synced = append(synced, routes.synced...)
		for _, f := range routes.factories {
			factories = append(factories, f)
		}
	}

	for _, f := range factories {
		f.Start(ctx.Done())
	}
	defer func() {
		for _, f := range factories {
			f.Shutdown()
		}
	}()
	log.Info("watching", "namespaces", namespaces)
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		return nil // ctx ended first
	}

	region := func(node string) string {
		obj, ok, err := nodes.GetStore().GetByKey(node)
		if err != nil || !ok {
			return ""
		}
		return obj.(*corev1.Node).Labels[corev1.LabelTopologyRegion]
	}
	reported := map[string][]string{} // service key → annotation errors already recorded
	built := map[string]discovery.Service{}
	podOf := func(w watched) func(ns, name string) *podInfo {
		return func(ns, name string) *podInfo {
			obj, ok, err := w.pods.GetStore().GetByKey(ns + "/" + name)
			if err != nil || !ok {
				return nil
			}
			p := obj.(*corev1.Pod)
			ips := make([]string, 0, len(p.Status.PodIPs))
			for _, ip := range p.Status.PodIPs {
				ips = append(ips, ip.IP)
			}
			return &podInfo{labels: p.Labels, meshed: p.Annotations[AnnotationSidecarStatus] == inject.StatusInjected,
				serviceAccount: cmp.Or(p.Spec.ServiceAccountName, "default"), ips: ips}
		}
	}
	// rebuild builds the service key names again from the informers'
	// stores, or forgets it when it is gone.
	rebuild := func(w watched, key string) {
		s.builds.Add(1)
		forget := func() {
			delete(built, key)
			delete(reported, key) // gone: reported again should it come back broken
		}
		obj, ok, err := w.services.GetStore().GetByKey(key)
		if err != nil || !ok {
			forget()
			return
		}
		svc := obj.(*corev1.Service)
		objs, err := w.slices.GetIndexer().ByIndex(byService, key)
		if err != nil {
			log.Warn("endpoint slices", "service", key, "err", err)
		}
		eps := make([]*discoveryv1.EndpointSlice, 0, len(objs))
		for _, o := range objs {
			eps = append(eps, o.(*discoveryv1.EndpointSlice))
		}
		out1, bad, ok := buildService(svc, eps, region, podOf(w))
		if !ok {
			forget()
			return
		}
		s.report(recorder, svc, bad, reported)
		if err := out1.Validate(); err != nil {
			s.reportOnce(recorder, svc, reported, "Invalid", err.Error())
			delete(built, key)
			return
		}
		built[key] = out1
	}
	build := func() []discovery.Service {
		keys, all := dirty.take()
		if all {
			keys = keys[:0]
			for k := range built {
				keys = append(keys, k)
			}
			for _, w := range sets {
				keys = append(keys, w.services.GetStore().ListKeys()...)
			}
			slices.Sort(keys)
			keys = slices.Compact(keys)
		}
		for _, key := range keys {
			ns, _, _ := strings.Cut(key, "/")
			w, ok := setFor(sets, namespaces, ns)
			if !ok {
				continue
			}
			rebuild(w, key)
		}
		out := make([]discovery.Service, 0, len(built))
		for _, svc := range built {
			out = append(out, svc)
		}
		slices.SortFunc(out, func(a, b discovery.Service) int { return strings.Compare(a.Key(), b.Key()) })
		return out
	}

	// localities maps every meshed pod on a node with topology labels to
	// the node's locality.
	localities := func() map[string]discovery.Locality {
		out := map[string]discovery.Locality{}
		for _, w := range sets {
			for _, obj := range w.pods.GetStore().List() {
				p := obj.(*corev1.Pod)
				if p.Spec.NodeName == "" || p.Annotations[AnnotationSidecarStatus] != inject.StatusInjected {
					continue
				}
				n, ok, err := nodes.GetStore().GetByKey(p.Spec.NodeName)
				if err != nil || !ok {
					continue
				}
				if l := nodeLocality(n.(*corev1.Node)); l != (discovery.Locality{}) {
					out[p.Namespace+"/"+p.Name] = l
				}
			}
		}
		return out
	}
	reportLocalities := func() {
		if takesLocalities {
			localitySink.UpdateLocalities(Name, localities())
		}
	}
	reportRoutes := func() {
		if routes != nil {
			routeSink.UpdateRoutes(Name, routes.routes(log))
		}
	}
	// Routes first: the registry publishes its first snapshot when the
	// services come, and it carries both.
	reportRoutes()
	reportLocalities()
	sink.Update(Name, build())
	for {
		var services, changedRoutes, changedLocalities bool
		select {
		case <-ctx.Done():
			return nil
		case <-kick:
			services = true
		case <-routeKick:
			changedRoutes = true
		case <-localityKick:
			changedLocalities = true
		}
		// What else changed meanwhile goes into the same report.
		select {
		case <-kick:
			services = true
		default:
		}
		select {
		case <-routeKick:
			changedRoutes = true
		default:
		}
		select {
		case <-localityKick:
			changedLocalities = true
		default:
		}
		if changedRoutes {
			reportRoutes()
		}
		if changedLocalities {
			reportLocalities()
		}
		if services {
			sink.Update(Name, build())
		}
		t := time.NewTimer(s.opts.MinInterval)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// nodeLocality is a node's region and zone, from its topology labels
// (as its endpoints' localities are made: the slice's zone, the node's
// region); zero for nil.
func nodeLocality(n *corev1.Node) discovery.Locality {
	if n == nil {
		return discovery.Locality{}
	}
	return discovery.Locality{Region: n.Labels[corev1.LabelTopologyRegion], Zone: n.Labels[corev1.LabelTopologyZone]}
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// report records a Warning Event on svc for each annotation error not
// recorded before, and logs it.
func (s *Source) report(rec record.EventRecorder, svc *corev1.Service, bad []*AnnotationError, reported map[string][]string) {
	for _, b := range bad {
		s.reportOnce(rec, svc, reported, EventReasonInvalidAnnotation, b.Error())
	}
}

func (s *Source) reportOnce(rec record.EventRecorder, svc *corev1.Service, reported map[string][]string, reason, msg string) {
	key := svc.Namespace + "/" + svc.Name
	if slices.Contains(reported[key], msg) {
		return
	}
	reported[key] = append(reported[key], msg)
	s.opts.Logger.Warn("service config ignored", "service", key, "reason", reason, "detail", msg)
	rec.Event(svc, corev1.EventTypeWarning, reason, msg)
}
