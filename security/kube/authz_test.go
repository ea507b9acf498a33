package kube

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"gopkg.in/yaml.v3"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/tender-mesh/tender/security/authz"
)

// object returns an AuthorizationPolicy; spec holds JSON values only
// ([]any, map[string]any), as unstructured objects must.
func object(ns, name, rv string, spec map[string]any) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{"spec": spec}}
	if spec == nil {
		delete(u.Object, "spec")
	}
	u.SetAPIVersion(GVR.GroupVersion().String())
	u.SetKind(Kind)
	u.SetNamespace(ns)
	u.SetName(name)
	u.SetResourceVersion(rv)
	return u
}

func list(v ...any) []any { return v }

// recorder keeps what Watch passes to update.
type recorder struct {
	mu      sync.Mutex
	updates [][]authz.Policy
	changed chan struct{}
}

func newRecorder() *recorder { return &recorder{changed: make(chan struct{}, 1)} }

func (r *recorder) update(p []authz.Policy) {
	r.mu.Lock()
	r.updates = append(r.updates, p)
	r.mu.Unlock()
	signal(r.changed)
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.updates)
}

// waitFor waits until the last update is want.
func (r *recorder) waitFor(t *testing.T, what string, want []authz.Policy) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	var diff string
	for {
		r.mu.Lock()
		if n := len(r.updates); n > 0 {
			diff = cmp.Diff(want, r.updates[n-1], cmpopts.EquateEmpty())
		} else {
			diff = "no update yet"
		}
		r.mu.Unlock()
		if diff == "" {
			return
		}
		select {
		case <-r.changed:
		case <-deadline:
			t.Fatalf("%s: timed out; last update (-want +got):\n%s", what, diff)
		}
	}
}

// logBuffer is a slog handler's output, safe for concurrent use.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) count(substr string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Count(b.buf.String(), substr)
}

func poll(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func newClient(objs ...runtime.Object) *fake.FakeDynamicClient {
	return fake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
		map[schema.GroupVersionResource]string{GVR: Kind + "List"}, objs...)
}

func startWatch(t *testing.T, client *fake.FakeDynamicClient, namespaces []string, logs *logBuffer, rec *recorder) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	logger := slog.New(slog.NewTextHandler(logs, nil))
	done := make(chan error, 1)
	go func() { done <- Watch(ctx, client, namespaces, logger, rec.update) }()
	return func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Watch: got %v, want nil", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Watch did not return after its context ended")
		}
	}
}

func TestWatch(t *testing.T) {
	front := object("shop", "front", "1", map[string]any{
		"services": list("cart"),
		"rules":    list(map[string]any{"from": list(map[string]any{"principals": list(spiffe("shop", "web"))})}),
	})
	broken := object("shop", "broken", "1", map[string]any{"action": "MAYBE"})
	client := newClient(front, broken)
	rec, logs := newRecorder(), &logBuffer{}
	stop := startWatch(t, client, nil, logs, rec)
	defer stop()

	frontPolicy := authz.Policy{Name: "front", Namespace: "shop", Services: []string{"cart"},
		Rules: []authz.Rule{{From: []authz.Source{{Principals: []string{spiffe("shop", "web")}}}}}}
	// Invalid, it fails closed: an ALLOW without rules for what it names
	// (nothing readable here: its whole namespace).
	brokenDeny := authz.Policy{Name: "broken", Namespace: "shop", Action: authz.ActionAllow}
	rec.waitFor(t, "the initial set", []authz.Policy{brokenDeny, frontPolicy})
	if n := logs.count("policy=shop/broken"); n != 1 {
		t.Errorf("got %d warnings about shop/broken, want 1; logs:\n%s", n, logs.buf.String())
	}
	if !strings.Contains(logs.buf.String(), "level=WARN") || !strings.Contains(logs.buf.String(), `want ALLOW or DENY`) {
		t.Errorf("got logs %s, want a warning with the reason", logs.buf.String())
	}

	res := client.Resource(GVR)
	ctx := context.Background()
	bots := object("web", "deny-bots", "1", map[string]any{
		"action": "DENY",
		"rules": list(map[string]any{
			"from": list(map[string]any{"namespaces": list("bots")}),
			"to":   list(map[string]any{"methods": list("POST"), "paths": list("/admin*")}),
		}),
	})
	if _, err := res.Namespace("web").Create(ctx, bots, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	botsPolicy := authz.Policy{Name: "deny-bots", Namespace: "web", Action: authz.ActionDeny, Rules: []authz.Rule{{
		From: []authz.Source{{Namespaces: []string{"bots"}}},
		To:   []authz.Operation{{Methods: []string{"POST"}, Paths: []string{"/admin*"}}},
	}}}
	rec.waitFor(t, "after a create", []authz.Policy{brokenDeny, frontPolicy, botsPolicy})

	front = front.DeepCopy()
	front.SetResourceVersion("2")
	if err := unstructured.SetNestedSlice(front.Object, list("cart", "users"), "spec", "services"); err != nil {
		t.Fatal(err)
	}
	if _, err := res.Namespace("shop").Update(ctx, front, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	frontPolicy.Services = []string{"cart", "users"}
	rec.waitFor(t, "after an update", []authz.Policy{brokenDeny, frontPolicy, botsPolicy})

	if err := res.Namespace("web").Delete(ctx, "deny-bots", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, "after a delete", []authz.Policy{brokenDeny, frontPolicy})

	// Still broken at a new resourceVersion: warned again, once.
	broken = broken.DeepCopy()
	broken.SetResourceVersion("2")
	if err := unstructured.SetNestedField(broken.Object, "allow", "spec", "action"); err != nil {
		t.Fatal(err)
	}
	if _, err := res.Namespace("shop").Update(ctx, broken, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	poll(t, "a second warning", func() bool { return logs.count("policy=shop/broken") == 2 })
	// Touched at the same resourceVersion, then a valid change: the
	// rebuild that shows the change has seen the touch, and stays quiet.
	if _, err := res.Namespace("shop").Update(ctx, broken, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	frontPolicy.Services = []string{"cart"}
	front = front.DeepCopy()
	front.SetResourceVersion("3")
	if err := unstructured.SetNestedSlice(front.Object, list("cart"), "spec", "services"); err != nil {
		t.Fatal(err)
	}
	if _, err := res.Namespace("shop").Update(ctx, front, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, "after another update", []authz.Policy{brokenDeny, frontPolicy})
	if n := logs.count("policy=shop/broken"); n != 2 {
		t.Errorf("got %d warnings about shop/broken, want 2 (one per resourceVersion)", n)
	}

	// Fixed: it applies.
	broken = broken.DeepCopy()
	broken.SetResourceVersion("3")
	if err := unstructured.SetNestedField(broken.Object, "DENY", "spec", "action"); err != nil {
		t.Fatal(err)
	}
	if _, err := res.Namespace("shop").Update(ctx, broken, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, "after a fix", []authz.Policy{{Name: "broken", Namespace: "shop", Action: authz.ActionDeny}, frontPolicy})
}

func TestWatchNamespaces(t *testing.T) {
	client := newClient(
		object("shop", "a", "1", map[string]any{"rules": list(map[string]any{})}),
		object("web", "b", "1", nil),
		object("ops", "c", "1", nil),
	)
	rec := newRecorder()
	stop := startWatch(t, client, []string{"web", "shop", "web"}, &logBuffer{}, rec)
	defer stop()
	rec.waitFor(t, "the initial set", []authz.Policy{{Name: "a", Namespace: "shop", Rules: []authz.Rule{{}}}, {Name: "b", Namespace: "web"}})
}

func TestWatchWithoutCRD(t *testing.T) {
	client := newClient()
	var lists atomic.Int32
	client.PrependReactor("list", GVR.Resource, func(k8stesting.Action) (bool, runtime.Object, error) {
		lists.Add(1)
		return true, nil, apierrors.NewNotFound(GVR.GroupResource(), "")
	})
	rec, logs := newRecorder(), &logBuffer{}
	stop := startWatch(t, client, nil, logs, rec)
	poll(t, "two list attempts", func() bool { return lists.Load() >= 2 })
	stop()
	if n := logs.count("CRD not installed"); n != 1 {
		t.Errorf("got %d messages about the missing CRD, want 1; logs:\n%s", n, logs.buf.String())
	}
	if n := logs.count("level=INFO msg=\"AuthorizationPolicy CRD not installed"); n != 1 {
		t.Errorf("got logs %s, want the missing CRD logged at Info", logs.buf.String())
	}
	// No CRD, no policy: one empty update, so the control plane serves.
	if n := rec.count(); n != 1 {
		t.Errorf("got %d updates, want one (no policies) while the CRD is not installed", n)
	}
}

func TestWatchArguments(t *testing.T) {
	if err := Watch(context.Background(), nil, nil, nil, func([]authz.Policy) {}); err == nil {
		t.Error("got no error without a client, want one")
	}
	if err := Watch(context.Background(), newClient(), nil, nil, nil); err == nil {
		t.Error("got no error without an update func, want one")
	}
}

func TestFromObject(t *testing.T) {
	tests := []struct {
		name    string
		obj     *unstructured.Unstructured
		want    authz.Policy
		wantErr string
	}{
		{"no spec denies all", object("shop", "p", "1", nil), authz.Policy{Name: "p", Namespace: "shop"}, ""},
		{"empty spec", object("shop", "p", "1", map[string]any{}), authz.Policy{Name: "p", Namespace: "shop"}, ""},
		{"full", object("shop", "p", "1", map[string]any{"services": list("cart"), "action": "DENY", "rules": list(map[string]any{
			"from": list(map[string]any{"notPrincipals": list("*"), "notNamespaces": list("ops")}),
			"to":   list(map[string]any{"notMethods": list("GET"), "notPaths": list("/x")}),
		})}), authz.Policy{Name: "p", Namespace: "shop", Services: []string{"cart"}, Action: authz.ActionDeny, Rules: []authz.Rule{{
			From: []authz.Source{{NotPrincipals: []string{"*"}, NotNamespaces: []string{"ops"}}},
			To:   []authz.Operation{{NotMethods: []string{"GET"}, NotPaths: []string{"/x"}}},
		}}}, ""},
		{"unknown field", object("shop", "p", "1", map[string]any{"rules": list(map[string]any{"when": list()})}), authz.Policy{}, `unknown field "rules[0].when"`},
		{"wrong type", object("shop", "p", "1", map[string]any{"services": "cart"}), authz.Policy{}, "spec"},
		{"spec not an object", &unstructured.Unstructured{Object: map[string]any{"metadata": map[string]any{"name": "p"}, "spec": "x"}}, authz.Policy{}, "spec"},
		{"invalid", object("shop", "p", "1", map[string]any{"rules": list(map[string]any{"to": list(map[string]any{"paths": list("x")})})}),
			authz.Policy{}, "rules[0].to[0].paths[0]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := FromObject(tt.obj)
			if tt.wantErr != "" {
				if !errors.Is(err, authz.ErrInvalid) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("got %v, want an error wrapping authz.ErrInvalid with %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// TestCRD checks the CRD against GVR and the Go types: the same names,
// a structural schema (a type everywhere, no preserved unknown fields)
// whose properties are the json fields.
func TestCRD(t *testing.T) {
	data, err := os.ReadFile("../../charts/tender/crds/authorizationpolicies.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var crd struct {
		APIVersion string `yaml:"apiVersion"`
		Kind       string `yaml:"kind"`
		Metadata   struct {
			Name string `yaml:"name"`
		} `yaml:"metadata"`
		Spec struct {
			Group string `yaml:"group"`
			Scope string `yaml:"scope"`
			Names struct {
				Kind       string   `yaml:"kind"`
				Plural     string   `yaml:"plural"`
				ShortNames []string `yaml:"shortNames"`
			} `yaml:"names"`
			Versions []struct {
				Name    string `yaml:"name"`
				Served  bool   `yaml:"served"`
				Storage bool   `yaml:"storage"`
				Columns []struct {
					Name     string `yaml:"name"`
					JSONPath string `yaml:"jsonPath"`
				} `yaml:"additionalPrinterColumns"`
				Schema struct {
					OpenAPIV3Schema map[string]any `yaml:"openAPIV3Schema"`
				} `yaml:"schema"`
			} `yaml:"versions"`
		} `yaml:"spec"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(false)
	if err := dec.Decode(&crd); err != nil {
		t.Fatal(err)
	}
	if crd.APIVersion != "apiextensions.k8s.io/v1" || crd.Kind != "CustomResourceDefinition" {
		t.Errorf("got %s %s, want apiextensions.k8s.io/v1 CustomResourceDefinition", crd.APIVersion, crd.Kind)
	}
	if want := GVR.Resource + "." + GVR.Group; crd.Metadata.Name != want {
		t.Errorf("name: got %q, want %q", crd.Metadata.Name, want)
	}
	s := crd.Spec
	if s.Group != GVR.Group || s.Names.Kind != Kind || s.Names.Plural != GVR.Resource || s.Scope != "Namespaced" {
		t.Errorf("got group %q kind %q plural %q scope %q, want %q %q %q Namespaced", s.Group, s.Names.Kind, s.Names.Plural, s.Scope, GVR.Group, Kind, GVR.Resource)
	}
	if len(s.Versions) != 1 || s.Versions[0].Name != GVR.Version || !s.Versions[0].Served || !s.Versions[0].Storage {
		t.Fatalf("got versions %+v, want %s served and stored", s.Versions, GVR.Version)
	}
	v := s.Versions[0]
	var columns []string
	for _, c := range v.Columns {
		columns = append(columns, c.Name+"="+c.JSONPath)
	}
	if diff := cmp.Diff([]string{"Action=.spec.action", "Age=.metadata.creationTimestamp"}, columns); diff != "" {
		t.Errorf("printer columns (-want +got):\n%s", diff)
	}
	root := v.Schema.OpenAPIV3Schema
	checkStructural(t, "openAPIV3Schema", root)
	props := func(node map[string]any, path ...string) map[string]any {
		for _, p := range path {
			node, _ = node[p].(map[string]any)
		}
		return node
	}
	spec := props(root, "properties", "spec")
	rule := props(spec, "properties", "rules", "items")
	for _, c := range []struct {
		where  string
		schema map[string]any
		typ    reflect.Type
	}{
		{"spec", spec, reflect.TypeFor[kubeSpec]()},
		{"rules", rule, reflect.TypeFor[authz.Rule]()},
		{"from", props(rule, "properties", "from", "items"), reflect.TypeFor[authz.Source]()},
		{"to", props(rule, "properties", "to", "items"), reflect.TypeFor[authz.Operation]()},
	} {
		var got []string
		for k := range props(c.schema, "properties") {
			got = append(got, k)
		}
		var want []string
		for f := range c.typ.Fields() {
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			want = append(want, name)
		}
		slices.Sort(got)
		slices.Sort(want)
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s: properties (-json fields +schema):\n%s", c.where, diff)
		}
	}
	if got := props(spec, "properties", "action")["enum"]; !reflect.DeepEqual(got, []any{"ALLOW", "DENY"}) {
		t.Errorf("action enum: got %v, want [ALLOW DENY]", got)
	}
}

// checkStructural checks that every schema node has a type and that none
// preserves unknown fields.
func checkStructural(t *testing.T, path string, node map[string]any) {
	t.Helper()
	if _, ok := node["type"]; !ok {
		t.Errorf("%s: no type", path)
	}
	for _, k := range []string{"x-kubernetes-preserve-unknown-fields", "additionalProperties"} {
		if _, ok := node[k]; ok {
			t.Errorf("%s: %s is set", path, k)
		}
	}
	if props, ok := node["properties"].(map[string]any); ok {
		for name, p := range props {
			sub, ok := p.(map[string]any)
			if !ok {
				t.Errorf("%s.%s: not a schema", path, name)
				continue
			}
			checkStructural(t, path+"."+name, sub)
		}
	}
	if items, ok := node["items"].(map[string]any); ok {
		checkStructural(t, path+"[]", items)
	}
}

func spiffe(ns, sa string) string { return "spiffe://cluster.local/ns/" + ns + "/sa/" + sa }

func TestDenyAll(t *testing.T) {
	for _, tc := range []struct {
		name string
		spec map[string]any
		want []string
	}{
		{"services kept", map[string]any{"services": list("cart"), "action": "MAYBE"}, []string{"cart"}},
		{"services unreadable", map[string]any{"services": "cart", "action": "DENY"}, nil},
		{"services invalid", map[string]any{"services": list("Cart!"), "action": "DENY"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := denyAll(object("shop", "p", "1", tc.spec))
			want := authz.Policy{Name: "p", Namespace: "shop", Services: tc.want, Action: authz.ActionAllow}
			if diff := cmp.Diff(want, got, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("denyAll (-want +got):\n%s", diff)
			}
			if got.Validate() != nil || len(got.Rules) != 0 {
				t.Errorf("the stand-in must be a valid ALLOW with no rules: %+v", got)
			}
		})
	}
}

// TestWatchCRDOfAnotherVersion: the policies' resource answers 404 while
// the CRD is installed (it serves another version: a chart and a control
// plane of different releases). That is not "no policies": nothing is
// reported, so the control plane serves no config rather than routes
// without their policies.
func TestWatchCRDOfAnotherVersion(t *testing.T) {
	client := newClient()
	client.PrependReactor("list", GVR.Resource, func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewNotFound(GVR.GroupResource(), "")
	})
	client.PrependReactor("get", crdGVR.Resource, func(k8stesting.Action) (bool, runtime.Object, error) {
		crd := &unstructured.Unstructured{}
		crd.SetName(GVR.GroupResource().String())
		return true, crd, nil
	})
	rec, logs := newRecorder(), &logBuffer{}
	stop := startWatch(t, client, nil, logs, rec)
	poll(t, "the CRD checked", func() bool { return logs.count("not served") > 0 })
	stop()
	if n := rec.count(); n != 0 {
		t.Errorf("got %d updates, want none while the installed CRD does not serve %s", n, GVR.Version)
	}
}
