package kube

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	authenticationv1 "k8s.io/api/authentication/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/tender-mesh/tender/security"
)

// reviewReactor answers TokenReviews with status, recording the spec.
func reviewReactor(calls *atomic.Int32, status authenticationv1.TokenReviewStatus, gotSpec *authenticationv1.TokenReviewSpec) k8stesting.ReactionFunc {
	return func(a k8stesting.Action) (bool, runtime.Object, error) {
		calls.Add(1)
		review := a.(k8stesting.CreateAction).GetObject().(*authenticationv1.TokenReview)
		if gotSpec != nil {
			*gotSpec = review.Spec
		}
		return true, &authenticationv1.TokenReview{Spec: review.Spec, Status: status}, nil
	}
}

func TestTokenReviewer(t *testing.T) {
	tests := []struct {
		name      string
		audiences []string
		status    authenticationv1.TokenReviewStatus
		want      security.Caller
		wantErr   string
	}{
		{
			name:      "service account",
			audiences: []string{"tender"},
			status:    authenticationv1.TokenReviewStatus{Authenticated: true, Audiences: []string{"tender"}, User: authenticationv1.UserInfo{Username: "system:serviceaccount:shop:cart"}},
			want:      security.Caller{Namespace: "shop", ServiceAccount: "cart"},
		},
		{
			name:   "no audiences asked",
			status: authenticationv1.TokenReviewStatus{Authenticated: true, User: authenticationv1.UserInfo{Username: "system:serviceaccount:default:web"}},
			want:   security.Caller{Namespace: "default", ServiceAccount: "web"},
		},
		{
			name:    "not authenticated",
			status:  authenticationv1.TokenReviewStatus{Authenticated: false, Error: "token has expired"},
			wantErr: "token review: not authenticated: token has expired",
		},
		{
			name:    "not a service account",
			status:  authenticationv1.TokenReviewStatus{Authenticated: true, User: authenticationv1.UserInfo{Username: "alice@example.com"}},
			wantErr: "not a service account: alice@example.com",
		},
		{
			name:    "malformed service account",
			status:  authenticationv1.TokenReviewStatus{Authenticated: true, User: authenticationv1.UserInfo{Username: "system:serviceaccount:shop"}},
			wantErr: "not a service account",
		},
		{
			name:      "audience mismatch",
			audiences: []string{"tender"},
			status:    authenticationv1.TokenReviewStatus{Authenticated: true, Audiences: []string{"api"}, User: authenticationv1.UserInfo{Username: "system:serviceaccount:shop:cart"}},
			wantErr:   "not accepted",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client := fake.NewClientset()
			var calls atomic.Int32
			var spec authenticationv1.TokenReviewSpec
			client.PrependReactor("create", "tokenreviews", reviewReactor(&calls, tt.status, &spec))
			r := &TokenReviewer{Client: client, Audiences: tt.audiences}
			got, err := r.Authenticate(context.Background(), "the-token")
			if diff := cmp.Diff(authenticationv1.TokenReviewSpec{Token: "the-token", Audiences: tt.audiences}, spec); diff != "" {
				t.Errorf("review spec (-want +got):\n%s", diff)
			}
			if tt.wantErr != "" {
				if !errors.Is(err, security.ErrUnauthenticated) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("Authenticate = %v, %v; want an error wrapping ErrUnauthenticated saying %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Authenticate (-want +got):\n%s", diff)
			}
		})
	}
}

func TestTokenReviewerRefusesWithoutReview(t *testing.T) {
	client := fake.NewClientset()
	var calls atomic.Int32
	client.PrependReactor("create", "tokenreviews", reviewReactor(&calls, authenticationv1.TokenReviewStatus{}, nil))
	tests := []struct {
		name   string
		r      *TokenReviewer
		token  string
		reason string
	}{
		{name: "empty token", r: &TokenReviewer{Client: client}, token: "", reason: "empty token"},
		{name: "no client", r: &TokenReviewer{}, token: "t", reason: "no Kubernetes client"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.r.Authenticate(context.Background(), tt.token)
			if !errors.Is(err, security.ErrUnauthenticated) || !strings.Contains(err.Error(), tt.reason) {
				t.Errorf("Authenticate = %v, want an error wrapping ErrUnauthenticated saying %q", err, tt.reason)
			}
		})
	}
	if n := calls.Load(); n != 0 {
		t.Errorf("%d reviews, want 0", n)
	}
	if got, want := (&TokenReviewer{}).Name(), "kubernetes"; got != want {
		t.Errorf("Name() = %q, want %q", got, want)
	}
}

func TestServiceAccount(t *testing.T) {
	tests := []struct {
		username string
		want     security.Caller
		wantOK   bool
	}{
		{username: "system:serviceaccount:shop:cart", want: security.Caller{Namespace: "shop", ServiceAccount: "cart"}, wantOK: true},
		{username: "system:serviceaccount:kube-system:default", want: security.Caller{Namespace: "kube-system", ServiceAccount: "default"}, wantOK: true},
		{username: "system:serviceaccount:shop"},
		{username: "system:serviceaccount::cart"},
		{username: "system:serviceaccount:shop:"},
		{username: "system:serviceaccount:shop:cart:extra"},
		{username: "system:serviceaccount:sh/op:cart"},
		{username: "system:serviceaccount:shop:a/sa/b"},
		{username: "system:serviceaccount:..:cart"},
		{username: "system:node:worker-1"},
		{username: "alice@example.com"},
	}
	for _, tt := range tests {
		t.Run(tt.username, func(t *testing.T) {
			got, ok := serviceAccount(tt.username)
			if ok != tt.wantOK || got != tt.want {
				t.Errorf("serviceAccount(%q) = %v, %v; want %v, %v", tt.username, got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func TestTokenReviewerCache(t *testing.T) {
	client := fake.NewClientset()
	var calls atomic.Int32
	client.PrependReactor("create", "tokenreviews", reviewReactor(&calls, authenticationv1.TokenReviewStatus{
		Authenticated: true, User: authenticationv1.UserInfo{Username: "system:serviceaccount:shop:cart"},
	}, nil))
	now := time.Now()
	r := &TokenReviewer{Client: client, now: func() time.Time { return now }}
	for range 3 {
		if _, err := r.Authenticate(context.Background(), "t1"); err != nil {
			t.Fatal(err)
		}
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("%d reviews for one token, want 1", n)
	}
	if _, err := r.Authenticate(context.Background(), "t2"); err != nil {
		t.Fatal(err)
	}
	now = now.Add(2 * time.Minute)
	if _, err := r.Authenticate(context.Background(), "t1"); err != nil {
		t.Fatal(err)
	}
	if n := calls.Load(); n != 3 {
		t.Errorf("%d reviews, want 3 (another token, then the expired entry)", n)
	}
}

// TestTokenReviewerInChain checks the reason a Chain gives when the
// review refuses the token.
func TestTokenReviewerInChain(t *testing.T) {
	client := fake.NewClientset()
	var calls atomic.Int32
	client.PrependReactor("create", "tokenreviews", reviewReactor(&calls, authenticationv1.TokenReviewStatus{Error: "invalid bearer token"}, nil))
	chain := security.Chain{&TokenReviewer{Client: client}}
	_, err := chain.Authenticate(context.Background(), "nope")
	want := "kubernetes: token review: not authenticated: invalid bearer token"
	if !errors.Is(err, security.ErrUnauthenticated) || err.Error() != want {
		t.Errorf("Authenticate = %v, want %q wrapping ErrUnauthenticated", err, want)
	}
}
