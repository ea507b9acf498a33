package main

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/utils/ptr"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwfake "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned/fake"

	"github.com/tender-mesh/tender/discovery/kube"
	"github.com/tender-mesh/tender/xds"
)

func serviceRef(name string) gwv1.ParentReference {
	return gwv1.ParentReference{Group: ptr.To(gwv1.Group("")), Kind: ptr.To(gwv1.Kind("Service")), Name: gwv1.ObjectName(name)}
}

func gatewayRef(name string) gwv1.ParentReference {
	return gwv1.ParentReference{Name: gwv1.ObjectName(name)}
}

var (
	accepted    = xds.Condition{OK: true, Reason: xds.ReasonAccepted, Message: "programmed into the mesh"}
	resolved    = xds.Condition{OK: true, Reason: xds.ReasonResolvedRefs, Message: "all references resolved"}
	notResolved = xds.Condition{Reason: xds.ReasonBackendNotFound, Message: "Service shop/gone not found"}
)

func cond(typ string, status metav1.ConditionStatus, reason, msg string, gen int64, at metav1.Time) metav1.Condition {
	return metav1.Condition{Type: typ, Status: status, Reason: reason, Message: msg, ObservedGeneration: gen, LastTransitionTime: at}
}

// ours is tender's status entry for ref with both conditions as given.
func ours(ref gwv1.ParentReference, acc, res metav1.Condition) gwv1.RouteParentStatus {
	return gwv1.RouteParentStatus{ParentRef: ref, ControllerName: xds.ControllerName, Conditions: []metav1.Condition{acc, res}}
}

// theirs is another controller's entry.
func theirs(ref gwv1.ParentReference) gwv1.RouteParentStatus {
	return gwv1.RouteParentStatus{ParentRef: ref, ControllerName: "example.net/gateway-controller",
		Conditions: []metav1.Condition{{Type: "Accepted", Status: metav1.ConditionTrue, Reason: "Accepted", ObservedGeneration: 1,
			LastTransitionTime: metav1.NewTime(time.Date(2024, 5, 1, 0, 0, 0, 0, time.UTC))}}}
}

func TestMergeParents(t *testing.T) {
	then := metav1.NewTime(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC))
	now := metav1.NewTime(time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC))
	okGreeter := ours(serviceRef("greeter"),
		cond(xds.ConditionAccepted, metav1.ConditionTrue, xds.ReasonAccepted, accepted.Message, 1, then),
		cond(xds.ConditionResolvedRefs, metav1.ConditionTrue, xds.ReasonResolvedRefs, resolved.Message, 1, then))
	tests := []struct {
		name string
		live []gwv1.RouteParentStatus
		want *xds.RouteStatus
		out  []gwv1.RouteParentStatus
	}{
		{
			name: "a new route",
			want: &xds.RouteStatus{Generation: 1, Parents: []xds.ParentStatus{{Ref: serviceRef("greeter"), Accepted: accepted, ResolvedRefs: notResolved}}},
			out: []gwv1.RouteParentStatus{ours(serviceRef("greeter"),
				cond(xds.ConditionAccepted, metav1.ConditionTrue, xds.ReasonAccepted, accepted.Message, 1, now),
				cond(xds.ConditionResolvedRefs, metav1.ConditionFalse, xds.ReasonBackendNotFound, notResolved.Message, 1, now))},
		},
		{
			name: "unchanged statuses keep their transition time, take the new generation",
			live: []gwv1.RouteParentStatus{okGreeter},
			want: &xds.RouteStatus{Generation: 2, Parents: []xds.ParentStatus{{Ref: serviceRef("greeter"), Accepted: accepted, ResolvedRefs: resolved}}},
			out: []gwv1.RouteParentStatus{ours(serviceRef("greeter"),
				cond(xds.ConditionAccepted, metav1.ConditionTrue, xds.ReasonAccepted, accepted.Message, 2, then),
				cond(xds.ConditionResolvedRefs, metav1.ConditionTrue, xds.ReasonResolvedRefs, resolved.Message, 2, then))},
		},
		{
			name: "a status that flips gets a new transition time",
			live: []gwv1.RouteParentStatus{okGreeter},
			want: &xds.RouteStatus{Generation: 2, Parents: []xds.ParentStatus{{Ref: serviceRef("greeter"), Accepted: accepted, ResolvedRefs: notResolved}}},
			out: []gwv1.RouteParentStatus{ours(serviceRef("greeter"),
				cond(xds.ConditionAccepted, metav1.ConditionTrue, xds.ReasonAccepted, accepted.Message, 2, then),
				cond(xds.ConditionResolvedRefs, metav1.ConditionFalse, xds.ReasonBackendNotFound, notResolved.Message, 2, now))},
		},
		{
			name: "other controllers' entries kept in place, ours replaced, a parent no longer handled dropped",
			live: []gwv1.RouteParentStatus{theirs(gatewayRef("edge")), ours(serviceRef("old"), okGreeter.Conditions[0], okGreeter.Conditions[1]),
				okGreeter, theirs(serviceRef("greeter"))},
			want: &xds.RouteStatus{Generation: 1, Parents: []xds.ParentStatus{
				{Ref: serviceRef("web"), Accepted: accepted, ResolvedRefs: resolved},
				{Ref: serviceRef("greeter"), Accepted: accepted, ResolvedRefs: resolved},
			}},
			out: []gwv1.RouteParentStatus{theirs(gatewayRef("edge")), okGreeter, theirs(serviceRef("greeter")),
				ours(serviceRef("web"),
					cond(xds.ConditionAccepted, metav1.ConditionTrue, xds.ReasonAccepted, accepted.Message, 1, now),
					cond(xds.ConditionResolvedRefs, metav1.ConditionTrue, xds.ReasonResolvedRefs, resolved.Message, 1, now))},
		},
		{
			name: "no longer handled at all: only ours go",
			live: []gwv1.RouteParentStatus{okGreeter, theirs(gatewayRef("edge"))},
			out:  []gwv1.RouteParentStatus{theirs(gatewayRef("edge"))},
		},
		{
			name: "nothing either way: an empty list, not nil",
			out:  []gwv1.RouteParentStatus{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var live []gwv1.RouteParentStatus
			for _, p := range tt.live {
				live = append(live, *p.DeepCopy())
			}
			got := mergeParents(live, tt.want, now)
			if diff := cmp.Diff(tt.out, got); diff != "" {
				t.Errorf("merged parents (-want +got):\n%s", diff)
			}
			if got == nil {
				t.Error("got nil, want a list (the CRD requires status.parents)")
			}
			if diff := cmp.Diff(tt.live, live); diff != "" {
				t.Errorf("mergeParents changed its input (-before +after):\n%s", diff)
			}
		})
	}
}

func TestTruncate(t *testing.T) {
	for _, tt := range []struct {
		in   string
		n    int
		want string
	}{
		{"short", 10, "short"},
		{"exactly", 7, "exactly"},
		{"abcdef", 3, "abc"},
		{"aé", 2, "a"}, // é is two bytes: not cut in half
		{"日本", 4, "日"},
	} {
		if got := truncate(tt.in, tt.n); got != tt.want {
			t.Errorf("truncate(%q, %d) = %q, want %q", tt.in, tt.n, got, tt.want)
		}
	}
}

// statusWrites counts the status updates a fake clientset received.
func statusWrites(gw *gwfake.Clientset) int {
	n := 0
	for _, a := range gw.Actions() {
		if a.GetVerb() == "update" && a.GetSubresource() == "status" {
			n++
		}
	}
	return n
}

func TestRouteStatusWriterSync(t *testing.T) {
	ctx := context.Background()
	web := &gwv1.HTTPRoute{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop", Generation: 2},
		Spec:       gwv1.HTTPRouteSpec{CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: []gwv1.ParentReference{gatewayRef("edge"), serviceRef("web")}}},
		Status:     gwv1.HTTPRouteStatus{RouteStatus: gwv1.RouteStatus{Parents: []gwv1.RouteParentStatus{theirs(gatewayRef("edge"))}}},
	}
	// A route tender wrote the status of before it restarted, and no
	// longer handles.
	stale := &gwv1.GRPCRoute{
		ObjectMeta: metav1.ObjectMeta{Name: "stale", Namespace: "shop", Generation: 1},
		Status: gwv1.GRPCRouteStatus{RouteStatus: gwv1.RouteStatus{Parents: []gwv1.RouteParentStatus{
			ours(serviceRef("gone"), metav1.Condition{Type: "Accepted", Status: metav1.ConditionTrue, Reason: "Accepted"},
				metav1.Condition{Type: "ResolvedRefs", Status: metav1.ConditionTrue, Reason: "ResolvedRefs"}),
			theirs(gatewayRef("edge")),
		}}},
	}
	gw := gwfake.NewClientset(web, stale)
	w := newRouteStatusWriter(routeStatusOptions{Client: gw})
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	w.now = func() time.Time { return now }
	status := func(res xds.Condition) []xds.RouteStatus {
		return []xds.RouteStatus{{Kind: "HTTPRoute", Namespace: "shop", Name: "web", Generation: 2, Source: kube.Name,
			Parents: []xds.ParentStatus{{Ref: serviceRef("web"), Accepted: accepted, ResolvedRefs: res}}}}
	}

	written := map[string]*xds.RouteStatus{}
	if err := w.seed(ctx, written); err != nil {
		t.Fatal(err)
	}
	if !w.syncAll(ctx, status(resolved), written) {
		t.Fatal("syncAll failed")
	}
	got, err := gw.GatewayV1().HTTPRoutes("shop").Get(ctx, "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	at := metav1.NewTime(now)
	want := []gwv1.RouteParentStatus{theirs(gatewayRef("edge")), ours(serviceRef("web"),
		cond("Accepted", metav1.ConditionTrue, "Accepted", accepted.Message, 2, at),
		cond("ResolvedRefs", metav1.ConditionTrue, "ResolvedRefs", resolved.Message, 2, at))}
	if diff := cmp.Diff(want, got.Status.Parents); diff != "" {
		t.Errorf("web's status.parents (-want +got):\n%s", diff)
	}
	st, err := gw.GatewayV1().GRPCRoutes("shop").Get(ctx, "stale", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]gwv1.RouteParentStatus{theirs(gatewayRef("edge"))}, st.Status.Parents); diff != "" {
		t.Errorf("stale's status.parents, want tender's entry gone (-want +got):\n%s", diff)
	}
	if n := statusWrites(gw); n != 2 {
		t.Errorf("%d status writes, want 2", n)
	}

	// The same statuses again (every snapshot brings them): no call at
	// all. After a resync: reads, and no write.
	gw.ClearActions()
	w.syncAll(ctx, status(resolved), written)
	if n := len(gw.Actions()); n != 0 {
		t.Errorf("%d calls for unchanged statuses, want none: %v", n, gw.Actions())
	}
	for k := range written {
		written[k] = nil
	}
	w.syncAll(ctx, status(resolved), written)
	if n := statusWrites(gw); n != 0 {
		t.Errorf("%d status writes after a resync of unchanged statuses, want none", n)
	}

	// A change, written on the second try after a conflict.
	conflicts := 0
	gw.PrependReactor("update", "httproutes", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.GetSubresource() != "status" || conflicts > 0 {
			return false, nil, nil
		}
		conflicts++
		return true, nil, apierrors.NewConflict(schema.GroupResource{Group: "gateway.networking.k8s.io", Resource: "httproutes"}, "web", nil)
	})
	later := now.Add(time.Hour)
	w.now = func() time.Time { return later }
	if !w.syncAll(ctx, status(notResolved), written) {
		t.Fatal("syncAll failed after a conflict")
	}
	got, _ = gw.GatewayV1().HTTPRoutes("shop").Get(ctx, "web", metav1.GetOptions{})
	want[1] = ours(serviceRef("web"), cond("Accepted", metav1.ConditionTrue, "Accepted", accepted.Message, 2, at),
		cond("ResolvedRefs", metav1.ConditionFalse, "BackendNotFound", notResolved.Message, 2, metav1.NewTime(later)))
	if diff := cmp.Diff(want, got.Status.Parents); diff != "" || conflicts != 1 {
		t.Errorf("after %d conflicts, web's status.parents (-want +got):\n%s", conflicts, diff)
	}

	// The route is no longer tender's: its entry goes, the other stays.
	if !w.syncAll(ctx, nil, written) {
		t.Fatal("syncAll failed")
	}
	got, _ = gw.GatewayV1().HTTPRoutes("shop").Get(ctx, "web", metav1.GetOptions{})
	if diff := cmp.Diff(want[:1], got.Status.Parents); diff != "" {
		t.Errorf("web's status.parents once not tender's (-want +got):\n%s", diff)
	}
	if len(written) != 0 {
		t.Errorf("written still holds %v", written)
	}
}

// TestRouteStatusWriterRun: Update returns at once and keeps only the
// Kubernetes source's routes; Run writes the latest.
func TestRouteStatusWriterRun(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	web := &gwv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop", Generation: 1}}
	gw := gwfake.NewClientset(web)
	w := newRouteStatusWriter(routeStatusOptions{Client: gw})
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()

	for _, res := range []xds.Condition{notResolved, resolved} { // the last wins
		w.Update([]xds.RouteStatus{
			{Kind: "HTTPRoute", Namespace: "shop", Name: "web", Generation: 1, Source: kube.Name,
				Parents: []xds.ParentStatus{{Ref: serviceRef("web"), Accepted: accepted, ResolvedRefs: res}}},
			{Kind: "HTTPRoute", Namespace: "shop", Name: "from-a-file", Generation: 1, Source: "file",
				Parents: []xds.ParentStatus{{Ref: serviceRef("web"), Accepted: accepted, ResolvedRefs: resolved}}},
		})
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, err := gw.GatewayV1().HTTPRoutes("shop").Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if ps := got.Status.Parents; len(ps) == 1 && slices.ContainsFunc(ps[0].Conditions, func(c metav1.Condition) bool {
			return c.Type == "ResolvedRefs" && c.Status == metav1.ConditionTrue
		}) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("web's status.parents %+v, want tender's entry with ResolvedRefs True", got.Status.Parents)
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, a := range gw.Actions() {
		if ga, ok := a.(k8stesting.GetAction); ok && ga.GetName() == "from-a-file" {
			t.Errorf("the writer read a route of the file source: %v", a)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run returned %v, want nil", err)
	}
}
