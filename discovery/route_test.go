package discovery

import (
	"errors"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// TestRouteValidateBounds: a route from any source is held to the bounds
// the Gateway API's CRDs set, one over each refused.
func TestRouteValidateBounds(t *testing.T) {
	w := func(n int32) *int32 { return &n }
	route := func(edit func(*gwv1.HTTPRoute)) Route {
		r := &gwv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Name: "r", Namespace: "default"}}
		r.Spec.ParentRefs = []gwv1.ParentReference{{Name: "web"}}
		r.Spec.Rules = []gwv1.HTTPRouteRule{{BackendRefs: []gwv1.HTTPBackendRef{{BackendRef: gwv1.BackendRef{Weight: w(1)}}}}}
		if edit != nil {
			edit(r)
		}
		return Route{HTTP: r}
	}
	ok := route(func(r *gwv1.HTTPRoute) {
		r.Spec.Rules = make([]gwv1.HTTPRouteRule, maxRules)
		r.Spec.Rules[0].BackendRefs = []gwv1.HTTPBackendRef{{BackendRef: gwv1.BackendRef{Weight: w(maxWeight)}}}
	})
	if err := ok.Validate(); err != nil {
		t.Fatalf("a route at the bounds: %v", err)
	}
	for name, r := range map[string]Route{
		"17 rules":        route(func(r *gwv1.HTTPRoute) { r.Spec.Rules = make([]gwv1.HTTPRouteRule, maxRules+1) }),
		"weight over 1e6": route(func(r *gwv1.HTTPRoute) { r.Spec.Rules[0].BackendRefs[0].Weight = w(maxWeight + 1) }),
		"negative weight": route(func(r *gwv1.HTTPRoute) { r.Spec.Rules[0].BackendRefs[0].Weight = w(-1) }),
		"no parentRefs":   route(func(r *gwv1.HTTPRoute) { r.Spec.ParentRefs = nil }),
		"33 parentRefs":   route(func(r *gwv1.HTTPRoute) { r.Spec.ParentRefs = make([]gwv1.ParentReference, maxParentRefs+1) }),
		"65 matches":      route(func(r *gwv1.HTTPRoute) { r.Spec.Rules[0].Matches = make([]gwv1.HTTPRouteMatch, maxMatches+1) }),
		"17 headers": route(func(r *gwv1.HTTPRoute) {
			r.Spec.Rules[0].Matches = []gwv1.HTTPRouteMatch{{Headers: make([]gwv1.HTTPHeaderMatch, maxFieldList+1)}}
		}),
		"name not a label": route(func(r *gwv1.HTTPRoute) { r.Name = "Web_Route" }),
		"name too long":    route(func(r *gwv1.HTTPRoute) { r.Name = strings.Repeat("a", 254) }),
		"both kinds":       {HTTP: route(nil).HTTP, GRPC: &gwv1.GRPCRoute{}},
	} {
		if err := r.Validate(); !errors.Is(err, ErrInvalidRoute) {
			t.Errorf("%s: %v, want ErrInvalidRoute", name, err)
		}
	}
}
