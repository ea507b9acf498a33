package kube

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	authenticationv1 "k8s.io/api/authentication/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/tender-mesh/tender/security"
	"github.com/tender-mesh/tender/security/authz"
)

// FuzzFromObject decodes arbitrary bytes as the JSON of an
// AuthorizationPolicy object, as the dynamic informer does, and reads the
// policy with FromObject. It must never panic; refuse with an error
// wrapping authz.ErrInvalid, or accept a policy that validates, compiles
// to RBAC for a service it protects, and comes back the same from its own
// JSON, from the slimmed object the informer keeps and from a second
// read. The stand-in denyAll puts in place of a refused policy must deny
// everything: an ALLOW without rules, valid when the object's name is.
func FuzzFromObject(f *testing.F) {
	for _, s := range []string{
		`{"apiVersion":"security.tender.dev/v1alpha1","kind":"AuthorizationPolicy","metadata":{"name":"cart-allow","namespace":"shop"},
		  "spec":{"services":["cart"],"rules":[{"from":[{"principals":["spiffe://cluster.local/ns/shop/sa/web"],"namespaces":["shop"]}],"to":[{"methods":["GET","POST"],"paths":["/cart/*"]}]}]}}`,
		`{"apiVersion":"security.tender.dev/v1alpha1","kind":"AuthorizationPolicy","metadata":{"name":"deny-plaintext","namespace":"shop"},
		  "spec":{"action":"DENY","rules":[{"from":[{"notPrincipals":["*"],"notNamespaces":["team-*"]}],"to":[{"notMethods":["GET"],"notPaths":["*.json"]}]}]}}`,
		`{"apiVersion":"security.tender.dev/v1alpha1","kind":"AuthorizationPolicy","metadata":{"name":"allow-all"},"spec":{"rules":[{}]}}`,
		`{"apiVersion":"security.tender.dev/v1alpha1","kind":"AuthorizationPolicy","metadata":{"name":"nothing","namespace":"shop"}}`,
		`{"apiVersion":"security.tender.dev/v1alpha1","kind":"AuthorizationPolicy","metadata":{"name":"p","namespace":"shop"},"spec":{"rules":[{"when":[]}]}}`,
		`{"apiVersion":"security.tender.dev/v1alpha1","kind":"AuthorizationPolicy","metadata":{"name":"p","namespace":"shop"},"spec":{"services":"cart","action":"MAYBE"}}`,
		`{"apiVersion":"security.tender.dev/v1alpha1","kind":"AuthorizationPolicy","metadata":{"name":"p","namespace":"shop"},"spec":{"services":[1,null,{}],"rules":[{"to":[{"paths":["x"]}]}]}}`,
		`{"apiVersion":"security.tender.dev/v1alpha1","kind":"AuthorizationPolicy","metadata":{"name":"Bad Name!"},"spec":"x"}`,
		`{"kind":"AuthorizationPolicy","apiVersion":"v1","spec":{"rules":null,"services":[]}}`,
		`{"kind":"List","apiVersion":"v1","items":[]}`,
		`{"kind":"AuthorizationPolicy"`,
		`[]`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(data); err != nil {
			return
		}
		p, err := FromObject(u)
		if err != nil {
			if !errors.Is(err, authz.ErrInvalid) {
				t.Errorf("FromObject: got %v, want an error wrapping authz.ErrInvalid", err)
			}
			checkDenyAll(t, u)
			return
		}
		if err := p.Validate(); err != nil {
			t.Fatalf("FromObject accepted a policy that does not validate: %v", err)
		}
		ns := policyNamespace(p.Namespace)
		svc := "any"
		if len(p.Services) > 0 {
			svc = p.Services[0]
		}
		if _, err := authz.ForService([]authz.Policy{p}, ns, svc, "cluster.local"); err != nil {
			t.Errorf("ForService of an accepted policy: %v", err)
		}
		again, err := FromObject(u)
		if err != nil || !reflect.DeepEqual(p, again) {
			t.Errorf("FromObject twice: got %+v (%v), want %+v", again, err, p)
		}
		slim, err := slimObject(u)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := FromObject(slim.(*unstructured.Unstructured)); err != nil || !reflect.DeepEqual(p, got) {
			t.Errorf("FromObject of the slimmed object: got %+v (%v), want %+v", got, err, p)
		}
		// The policy's own JSON, as a new object, reads back the same.
		spec, err := json.Marshal(kubeSpec{Services: p.Services, Action: p.Action, Rules: p.Rules})
		if err != nil {
			t.Fatal(err)
		}
		spec2, err := json.Marshal(kubeSpec{Services: p.Services, Action: p.Action, Rules: p.Rules})
		if err != nil || string(spec) != string(spec2) {
			t.Fatalf("json.Marshal twice: got %s and %s", spec, spec2)
		}
		obj, err := json.Marshal(map[string]any{
			"apiVersion": GVR.GroupVersion().String(), "kind": Kind,
			"metadata": map[string]any{"name": p.Name, "namespace": p.Namespace},
			"spec":     json.RawMessage(spec),
		})
		if err != nil {
			t.Fatal(err)
		}
		u2 := &unstructured.Unstructured{}
		if err := u2.UnmarshalJSON(obj); err != nil {
			t.Fatalf("the policy's own JSON %s: %v", obj, err)
		}
		got, err := FromObject(u2)
		if err != nil {
			t.Fatalf("FromObject of the policy's own JSON %s: %v", obj, err)
		}
		if diff := cmp.Diff(p, got, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("round trip through %s (-first +second):\n%s", obj, diff)
		}
	})
}

// checkDenyAll checks the stand-in of the refused object u.
func checkDenyAll(t *testing.T, u *unstructured.Unstructured) {
	t.Helper()
	d := denyAll(u)
	if d.Action != authz.ActionAllow || len(d.Rules) != 0 || d.Name != u.GetName() || d.Namespace != u.GetNamespace() {
		t.Errorf("denyAll = %+v, want an ALLOW policy without rules named as the object", d)
	}
	named := authz.Policy{Name: u.GetName(), Namespace: u.GetNamespace()}
	if named.Validate() == nil {
		if err := d.Validate(); err != nil {
			t.Errorf("denyAll of an object with a valid name: %v", err)
		}
	}
}

func policyNamespace(ns string) string {
	if ns == "" {
		return authz.DefaultNamespace
	}
	return ns
}

// FuzzTokenReviewer authenticates arbitrary tokens against an API server
// that answers with arbitrary review results. It must never panic; refuse
// an empty token or one over maxTokenBytes without sending it; otherwise
// send exactly the token, once, with the reviewer's audiences; and accept
// only an authenticated review for an accepted audience of
// system:serviceaccount:NS:SA, whose NS and SA make a valid SPIFFE ID,
// returning that caller. Every refusal wraps security.ErrUnauthenticated
// and never quotes the token.
func FuzzTokenReviewer(f *testing.F) {
	var (
		calls  int
		sent   authenticationv1.TokenReviewSpec
		status authenticationv1.TokenReviewStatus
	)
	client := fake.NewClientset()
	client.PrependReactor("create", "tokenreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		calls++
		review := a.(k8stesting.CreateAction).GetObject().(*authenticationv1.TokenReview)
		sent = review.Spec
		return true, &authenticationv1.TokenReview{Spec: review.Spec, Status: status}, nil
	})
	jwt := "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0.eyJhdWQiOlsidGVuZGVyIl0sInN1YiI6InN5c3RlbTpzZXJ2aWNlYWNjb3VudDpzaG9wOmNhcnQifQ.c2lnbmF0dXJl"
	f.Add(jwt, true, "system:serviceaccount:shop:cart", "tender", "")
	f.Add(jwt, true, "system:serviceaccount:shop:cart", "api", "")
	f.Add(jwt, false, "", "", "token has expired")
	f.Add("x", true, "system:serviceaccount:shop", "tender", "")
	f.Add("x", true, "system:serviceaccount:a/b:c", "tender", "")
	f.Add("x", true, "system:serviceaccount:shop:cart:extra", "tender", "")
	f.Add("x", true, "alice@example.com", "tender", "")
	f.Add("", true, "system:serviceaccount:shop:cart", "tender", "")
	f.Add(" ", true, "system:serviceaccount:..:cart", "tender", "")
	f.Add(strings.Repeat("A", maxTokenBytes), true, "system:serviceaccount:shop:cart", "tender", "")
	f.Fuzz(func(t *testing.T, token string, authenticated bool, username, audience, reason string) {
		client.ClearActions()
		calls, sent = 0, authenticationv1.TokenReviewSpec{}
		status = authenticationv1.TokenReviewStatus{Authenticated: authenticated, User: authenticationv1.UserInfo{Username: username}, Audiences: []string{audience}, Error: reason}
		r := &TokenReviewer{Client: client, Audiences: []string{"tender"}}
		caller, err := r.Authenticate(context.Background(), token)

		if token == "" || len(token) > maxTokenBytes {
			if err == nil || calls != 0 {
				t.Fatalf("token of %d bytes: got %v and %d reviews, want a refusal and none", len(token), err, calls)
			}
		} else if calls != 1 || sent.Token != token || !slices.Equal(sent.Audiences, []string{"tender"}) {
			t.Fatalf("sent %d reviews, the last %+v; want one of the token with audiences [tender]", calls, sent)
		}
		if err != nil {
			if !errors.Is(err, security.ErrUnauthenticated) {
				t.Errorf("got %v, want an error wrapping security.ErrUnauthenticated", err)
			}
			if caller != (security.Caller{}) {
				t.Errorf("got caller %+v with the error %v", caller, err)
			}
			if len(token) >= 8 && strings.Contains(err.Error(), token) && !strings.Contains(username+audience+reason, token) {
				t.Errorf("the error %q quotes the token", err)
			}
			return
		}
		if !authenticated || audience != "tender" {
			t.Fatalf("accepted a review authenticated %v for audience %q", authenticated, audience)
		}
		if want := "system:serviceaccount:" + caller.Namespace + ":" + caller.ServiceAccount; username != want {
			t.Errorf("accepted user %q as %+v", username, caller)
		}
		if _, err := security.ParseID("spiffe://cluster.local/ns/" + caller.Namespace + "/sa/" + caller.ServiceAccount); err != nil {
			t.Errorf("accepted caller %+v, which makes no SPIFFE ID: %v", caller, err)
		}
		// A second call is answered from the cache.
		if again, err := r.Authenticate(context.Background(), token); err != nil || again != caller || calls != 1 {
			t.Errorf("second call: got %+v, %v after %d reviews; want %+v from the cache", again, err, calls, caller)
		}
	})
}
