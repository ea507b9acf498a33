package kube

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/tools/cache"

	"github.com/tender-mesh/tender/security/authz"
)

// GVR is the AuthorizationPolicy custom resource
// (charts/tender/crds/authorizationpolicies.yaml).
var GVR = schema.GroupVersionResource{Group: "security.tender.dev", Version: "v1alpha1", Resource: "authorizationpolicies"}

// crdGVR is where the API server keeps CustomResourceDefinitions.
var crdGVR = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// Kind is the custom resource's kind.
const Kind = "AuthorizationPolicy"

// watchInterval is the least time between two calls of Watch's update.
const watchInterval = 100 * time.Millisecond

// kubeSpec is the spec of an AuthorizationPolicy; its metadata gives the
// policy's name and namespace.
type kubeSpec struct {
	Services []string     `json:"services,omitempty"`
	Action   authz.Action `json:"action,omitempty"`
	Rules    []authz.Rule `json:"rules,omitempty"`
}

// FromObject returns the policy an AuthorizationPolicy object holds,
// validated. An unknown spec field is an error (it might have been meant
// to narrow the policy). Its errors wrap authz.ErrInvalid.
func FromObject(u *unstructured.Unstructured) (authz.Policy, error) {
	p := authz.Policy{Name: u.GetName(), Namespace: u.GetNamespace()}
	raw, found, err := unstructured.NestedFieldNoCopy(u.Object, "spec")
	if err != nil {
		return p, invalid(&p, "spec", "%v", err)
	}
	if found && raw != nil {
		m, ok := raw.(map[string]any)
		if !ok {
			return p, invalid(&p, "spec", "not an object")
		}
		var s kubeSpec
		if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(m, &s, true); err != nil {
			return p, invalid(&p, "spec", "%v", err)
		}
		p.Services, p.Action, p.Rules = s.Services, s.Action, s.Rules
	}
	return p, p.Validate()
}

// Watch keeps the AuthorizationPolicies of the cluster (of namespaces, or
// all when empty) in step through dynamic informers. Once they have
// synced, and after each change (at most every 100 ms), it calls update
// with the full set of valid policies, sorted by namespace/name, unless
// the set is the one it passed last; update must not modify the policies
// it is passed. An invalid object is skipped and
// logged at Warn once per resourceVersion. When the CRD is not installed
// Watch logs that once at Info and the informers keep retrying quietly:
// update is first called with no policies (without the CRD there can be
// none), and again once it is installed. A 404 while the CRD exists (it
// serves another version than GVR's) is not taken for "none": nothing
// is reported, and the control plane serves nothing, until the informers
// sync. Watch returns when ctx ends; it fails only when it cannot start.
func Watch(ctx context.Context, client dynamic.Interface, namespaces []string, logger *slog.Logger, update func([]authz.Policy)) error {
	if client == nil || update == nil {
		return errors.New("authz: watch: no client or no update func")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	namespaces = slices.Clone(namespaces)
	slices.Sort(namespaces)
	namespaces = slices.Compact(namespaces)
	if len(namespaces) == 0 || slices.Contains(namespaces, metav1.NamespaceAll) {
		namespaces = []string{metav1.NamespaceAll}
	}

	kick := make(chan struct{}, 1)
	notify := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { signal(kick) },
		UpdateFunc: func(any, any) { signal(kick) },
		DeleteFunc: func(any) { signal(kick) },
	}
	var missing atomic.Bool // the CRD was found missing and logged so
	missingCh := make(chan struct{}, 1)
	onError := func(_ context.Context, _ *cache.Reflector, err error) {
		if apierrors.IsNotFound(err) {
			if missing.CompareAndSwap(false, true) {
				logger.Info("AuthorizationPolicy CRD not installed; waiting for it", "resource", GVR.String())
				signal(missingCh)
			}
			return
		}
		logger.Warn("watching AuthorizationPolicies", "err", err)
	}
	var factories []dynamicinformer.DynamicSharedInformerFactory
	var informers []cache.SharedIndexInformer
	var synced []cache.InformerSynced
	for _, ns := range namespaces {
		f := dynamicinformer.NewFilteredDynamicSharedInformerFactory(client, 0, ns, nil)
		inf := f.ForResource(GVR).Informer()
		if err := inf.SetTransform(slimObject); err != nil {
			return fmt.Errorf("authz: watch: %w", err)
		}
		if err := inf.SetWatchErrorHandlerWithContext(onError); err != nil {
			return fmt.Errorf("authz: watch: %w", err)
		}
		if _, err := inf.AddEventHandler(notify); err != nil {
			return fmt.Errorf("authz: watch: %w", err)
		}
		factories, informers, synced = append(factories, f), append(informers, inf), append(synced, inf.HasSynced)
	}
	for _, f := range factories {
		f.Start(ctx.Done())
	}
	defer func() {
		for _, f := range factories {
			f.Shutdown()
		}
	}()
	if namespaces[0] == metav1.NamespaceAll {
		logger.Info("watching AuthorizationPolicies in all namespaces")
	} else {
		logger.Info("watching AuthorizationPolicies", "namespaces", namespaces)
	}
	// Without the CRD there can be no policy: that is a complete answer
	// (no policies), reported once so the control plane serves, and
	// replaced when the CRD appears and the informers sync. Until one of
	// the two, nothing is reported: the control plane serves no config
	// that could lack a policy.
	syncedCh := make(chan bool, 1)
	go func() { syncedCh <- cache.WaitForCacheSync(ctx.Done(), synced...) }()
wait:
	for {
		select {
		case ok := <-syncedCh:
			if !ok {
				return nil // ctx ended first
			}
			break wait
		case <-missingCh:
			// The resource answers 404: is the CRD really not there?
			_, err := client.Resource(crdGVR).Get(ctx, GVR.GroupResource().String(), metav1.GetOptions{})
			switch {
			case apierrors.IsNotFound(err):
				update([]authz.Policy{})
			case err == nil:
				logger.Error("AuthorizationPolicy CRD installed but "+GVR.Version+" not served: serving no config until it is",
					"crd", GVR.GroupResource().String())
			default:
				logger.Error("cannot tell whether the AuthorizationPolicy CRD is installed: serving no config until its policies sync", "err", err)
			}
		}
	}
	if missing.Load() {
		logger.Info("AuthorizationPolicy CRD found")
	}

	warned := map[string]string{} // object key → resourceVersion logged as invalid
	build := func() []authz.Policy {
		out := []authz.Policy{}
		seen := map[string]bool{}
		for _, inf := range informers {
			for _, obj := range inf.GetStore().List() {
				u, ok := obj.(*unstructured.Unstructured)
				if !ok {
					continue
				}
				key, rv := u.GetNamespace()+"/"+u.GetName(), u.GetResourceVersion()
				p, err := FromObject(u)
				if err != nil {
					seen[key] = true
					// Fail closed: what it protects is denied to everyone
					// until it is fixed, rather than left open.
					p = denyAll(u)
					if warned[key] != rv {
						warned[key] = rv
						logger.Warn("authorization policy invalid: the services it names deny every request until it is fixed",
							"policy", key, "resourceVersion", rv, "services", p.Services, "err", err)
					}
				}
				out = append(out, p)
			}
		}
		for k := range warned {
			if !seen[k] {
				delete(warned, k)
			}
		}
		slices.SortFunc(out, func(a, b authz.Policy) int { return strings.Compare(a.Key(), b.Key()) })
		return out
	}

	last := build()
	update(last)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-kick:
		}
		if next := build(); !reflect.DeepEqual(next, last) {
			last = next
			update(last)
		}
		t := time.NewTimer(watchInterval)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// slimObject keeps of an object only what FromObject reads, so many or
// big objects (managedFields, last-applied annotations) cost little.
func slimObject(obj any) (any, error) {
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return obj, nil
	}
	out := &unstructured.Unstructured{Object: map[string]any{}}
	out.SetAPIVersion(u.GetAPIVersion())
	out.SetKind(u.GetKind())
	out.SetName(u.GetName())
	out.SetNamespace(u.GetNamespace())
	out.SetResourceVersion(u.GetResourceVersion())
	out.SetUID(u.GetUID())
	if spec, ok := u.Object["spec"]; ok {
		out.Object["spec"] = spec
	}
	return out, nil
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// invalid returns an error wrapping authz.ErrInvalid that names the
// policy and the field.
func invalid(p *authz.Policy, field, format string, args ...any) error {
	name := p.Name
	if name == "" {
		name = "(unnamed)"
	}
	if p.Namespace != "" {
		name = p.Namespace + "/" + name
	}
	return fmt.Errorf("%w %s: %s: %s", authz.ErrInvalid, name, field, fmt.Sprintf(format, args...))
}

// denyAll stands in for an invalid policy: an ALLOW policy without rules
// (which allows nothing) for the services the object names, or for its
// whole namespace when even those cannot be read.
func denyAll(u *unstructured.Unstructured) authz.Policy {
	p := authz.Policy{Name: u.GetName(), Namespace: u.GetNamespace(), Action: authz.ActionAllow}
	if svcs, ok, err := unstructured.NestedStringSlice(u.Object, "spec", "services"); ok && err == nil {
		q := authz.Policy{Name: p.Name, Namespace: p.Namespace, Services: svcs, Action: authz.ActionAllow}
		if q.Validate() == nil {
			p.Services = svcs
		}
	}
	return p
}
