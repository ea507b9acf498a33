package kube

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
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

const byService = "service"

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
			Spec: corev1.PodSpec{ServiceAccountName: o.Spec.ServiceAccountName}}, nil
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

	kick := make(chan struct{}, 1)
	notify := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { signal(kick) },
		UpdateFunc: func(any, any) { signal(kick) },
		DeleteFunc: func(any) { signal(kick) },
	}
	namespaces := s.opts.Namespaces
	if len(namespaces) == 0 {
		namespaces = []string{metav1.NamespaceAll}
	}
	var factories []factory
	var sets []watched
	var synced []cache.InformerSynced
	for _, ns := range namespaces {
		f := informers.NewSharedInformerFactoryWithOptions(s.opts.Client, s.opts.Resync, informers.WithNamespace(ns))
		w := watched{
			services: f.Core().V1().Services().Informer(),
			slices:   f.Discovery().V1().EndpointSlices().Informer(),
			pods:     f.Core().V1().Pods().Informer(),
		}
		if err := w.slices.AddIndexers(cache.Indexers{byService: serviceKey}); err != nil {
			return fmt.Errorf("kubernetes source: %w", err)
		}
		if err := w.pods.SetTransform(slim); err != nil {
			return fmt.Errorf("kubernetes source: %w", err)
		}
		for _, inf := range []cache.SharedIndexInformer{w.services, w.slices, w.pods} {
			if _, err := inf.AddEventHandler(notify); err != nil {
				return fmt.Errorf("kubernetes source: %w", err)
			}
			synced = append(synced, inf.HasSynced)
		}
		factories, sets = append(factories, f), append(sets, w)
	}
	// Nodes are cluster-wide: one informer, for their region label.
	nf := informers.NewSharedInformerFactory(s.opts.Client, s.opts.Resync)
	nodes := nf.Core().V1().Nodes().Informer()
	if err := nodes.SetTransform(slim); err != nil {
		return fmt.Errorf("kubernetes source: %w", err)
	}
	if _, err := nodes.AddEventHandler(notify); err != nil {
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
	build := func() []discovery.Service {
		var out []discovery.Service
		seen := map[string]bool{}
		for _, w := range sets {
			pod := func(ns, name string) *podInfo {
				obj, ok, err := w.pods.GetStore().GetByKey(ns + "/" + name)
				if err != nil || !ok {
					return nil
				}
				p := obj.(*corev1.Pod)
				return &podInfo{labels: p.Labels, meshed: p.Annotations[AnnotationSidecarStatus] == inject.StatusInjected,
					serviceAccount: cmp.Or(p.Spec.ServiceAccountName, "default")}
			}
			for _, obj := range w.services.GetStore().List() {
				svc := obj.(*corev1.Service)
				key := svc.Namespace + "/" + svc.Name
				objs, err := w.slices.GetIndexer().ByIndex(byService, key)
				if err != nil {
					log.Warn("endpoint slices", "service", key, "err", err)
				}
				eps := make([]*discoveryv1.EndpointSlice, 0, len(objs))
				for _, o := range objs {
					eps = append(eps, o.(*discoveryv1.EndpointSlice))
				}
				out1, bad, ok := buildService(svc, eps, region, pod)
				if !ok {
					continue
				}
				s.report(recorder, svc, bad, reported)
				seen[key] = true
				if err := out1.Validate(); err != nil {
					s.reportOnce(recorder, svc, reported, "Invalid", err.Error())
					continue
				}
				out = append(out, out1)
			}
		}
		for k := range reported {
			if !seen[k] {
				delete(reported, k) // gone: report again should it come back broken
			}
		}
		slices.SortFunc(out, func(a, b discovery.Service) int {
			if a.Key() < b.Key() {
				return -1
			}
			return 1
		})
		return out
	}

	reportRoutes := func() {
		if routes != nil {
			routeSink.UpdateRoutes(Name, routes.routes(log))
		}
	}
	// Routes first: the registry publishes its first snapshot when the
	// services come, and it carries both.
	reportRoutes()
	sink.Update(Name, build())
	for {
		var services, changedRoutes bool
		select {
		case <-ctx.Done():
			return nil
		case <-kick:
			services = true
		case <-routeKick:
			changedRoutes = true
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
		if changedRoutes {
			reportRoutes()
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
