package kube

import (
	"cmp"
	"fmt"
	"log/slog"
	"slices"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sdiscovery "k8s.io/client-go/discovery"
	"k8s.io/client-go/tools/cache"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwinformers "sigs.k8s.io/gateway-api/pkg/client/informers/externalversions"

	"github.com/tender-mesh/tender/discovery"
)

// The Gateway API group version tender reads routes of, and their
// resources.
const (
	gatewayGroupVersion = "gateway.networking.k8s.io/v1"
	resourceHTTPRoutes  = "httproutes"
	resourceGRPCRoutes  = "grpcroutes"
)

// annotationLastApplied is kubectl's copy of what was last applied: it
// changes with every apply, and means nothing the spec does not say.
const annotationLastApplied = "kubectl.kubernetes.io/last-applied-configuration"

// servedRoutes asks the API server's discovery which of the route
// resources it serves. A cluster without the Gateway API's CRDs serves
// neither, which is no error.
func servedRoutes(dc k8sdiscovery.DiscoveryInterface) (http, grpc bool, err error) {
	list, err := dc.ServerResourcesForGroupVersion(gatewayGroupVersion)
	if apierrors.IsNotFound(err) {
		return false, false, nil
	}
	if err != nil {
		return false, false, fmt.Errorf("discover %s: %w", gatewayGroupVersion, err)
	}
	for _, r := range list.APIResources {
		switch r.Name {
		case resourceHTTPRoutes:
			http = true
		case resourceGRPCRoutes:
			grpc = true
		}
	}
	return http, grpc, nil
}

// routeWatch is the route informers of the watched namespaces.
type routeWatch struct {
	factories []gwinformers.SharedInformerFactory
	informers []cache.SharedIndexInformer
	synced    []cache.InformerSynced
	// invalid remembers the routes already logged as invalid, and why,
	// so that a resync does not log them again.
	invalid map[string]string
}

// watchRoutes makes the informers of the route kinds the API server
// serves, in each namespace; handler hears of every change. It returns
// nil, having logged why, when routes are off: no Gateway API client, or
// no route CRDs installed.
func (s *Source) watchRoutes(namespaces []string, handler cache.ResourceEventHandler) (*routeWatch, error) {
	log := s.opts.Logger
	if s.opts.Gateway == nil {
		return nil, nil
	}
	http, grpc, err := servedRoutes(s.opts.Client.Discovery())
	if err != nil {
		// Routes are an addition to the services: serve those.
		log.Warn("Gateway API routes off: cannot tell whether the API server serves them", "err", err)
		return nil, nil
	}
	if !http && !grpc {
		log.Info("Gateway API routes off: the API server serves no HTTPRoute or GRPCRoute (" + gatewayGroupVersion +
			"); install the Gateway API CRDs and restart the control plane to use them")
		return nil, nil
	}
	if !http || !grpc {
		log.Info("Gateway API routes: the API server serves only some route kinds", "httproutes", http, "grpcroutes", grpc)
	}
	w := &routeWatch{invalid: map[string]string{}}
	for _, ns := range namespaces {
		f := gwinformers.NewSharedInformerFactoryWithOptions(s.opts.Gateway, s.opts.Resync, gwinformers.WithNamespace(ns))
		var infs []cache.SharedIndexInformer
		if http {
			infs = append(infs, f.Gateway().V1().HTTPRoutes().Informer())
		}
		if grpc {
			infs = append(infs, f.Gateway().V1().GRPCRoutes().Informer())
		}
		for _, inf := range infs {
			if err := inf.SetTransform(dropManagedFields); err != nil {
				return nil, fmt.Errorf("kubernetes source: routes: %w", err)
			}
			if _, err := inf.AddEventHandler(handler); err != nil {
				return nil, fmt.Errorf("kubernetes source: routes: %w", err)
			}
			w.synced = append(w.synced, inf.HasSynced)
		}
		w.factories, w.informers = append(w.factories, f), append(w.informers, infs...)
	}
	log.Info("watching Gateway API routes", "httproutes", http, "grpcroutes", grpc)
	return w, nil
}

// dropManagedFields keeps the informers' cache small: the source never
// reads managed fields. A transform may change the object in place.
func dropManagedFields(obj any) (any, error) {
	if m, ok := obj.(metav1.Object); ok {
		m.SetManagedFields(nil)
	}
	return obj, nil
}

// routes lists the watched routes as the registry takes them: copies
// with what changes without meaning cleared, valid, sorted by key.
func (w *routeWatch) routes(log *slog.Logger) []discovery.Route {
	var out []discovery.Route
	seen := map[string]bool{}
	for _, inf := range w.informers {
		for _, obj := range inf.GetStore().List() {
			var r discovery.Route
			switch o := obj.(type) {
			case *gwv1.HTTPRoute:
				r.HTTP = meaningfulHTTP(o)
			case *gwv1.GRPCRoute:
				r.GRPC = meaningfulGRPC(o)
			default:
				continue
			}
			key := r.Key()
			seen[key] = true
			if err := r.Validate(); err != nil {
				if msg := err.Error(); w.invalid[key] != msg {
					w.invalid[key] = msg
					log.Warn("route ignored", "route", key, "err", err)
				}
				continue
			}
			delete(w.invalid, key)
			out = append(out, r)
		}
	}
	for key := range w.invalid {
		if !seen[key] {
			delete(w.invalid, key) // gone: log again should it come back invalid
		}
	}
	slices.SortFunc(out, func(a, b discovery.Route) int { return cmp.Compare(a.Key(), b.Key()) })
	return out
}

// meaningfulHTTP copies an HTTPRoute without its status and the metadata
// that changes on every write (resourceVersion, managed fields, kubectl's
// last-applied copy): writing the route's status must not make a new
// snapshot. Generation and creationTimestamp stay: the status reports
// the one, route precedence reads the other.
func meaningfulHTTP(r *gwv1.HTTPRoute) *gwv1.HTTPRoute {
	c := r.DeepCopy()
	c.TypeMeta = metav1.TypeMeta{APIVersion: gatewayGroupVersion, Kind: discovery.KindHTTPRoute}
	clearMeta(&c.ObjectMeta)
	c.Status = gwv1.HTTPRouteStatus{}
	return c
}

// meaningfulGRPC is meaningfulHTTP for a GRPCRoute.
func meaningfulGRPC(r *gwv1.GRPCRoute) *gwv1.GRPCRoute {
	c := r.DeepCopy()
	c.TypeMeta = metav1.TypeMeta{APIVersion: gatewayGroupVersion, Kind: discovery.KindGRPCRoute}
	clearMeta(&c.ObjectMeta)
	c.Status = gwv1.GRPCRouteStatus{}
	return c
}

func clearMeta(m *metav1.ObjectMeta) {
	m.ResourceVersion = ""
	m.ManagedFields = nil
	delete(m.Annotations, annotationLastApplied)
	if len(m.Annotations) == 0 {
		m.Annotations = nil
	}
}
