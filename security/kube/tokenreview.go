package kube

import (
	"context"
	"crypto/sha256"
	"slices"
	"strings"
	"sync"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/tender-mesh/tender/security"
)

// Review cache bounds.
const (
	reviewCacheTTL  = time.Minute
	reviewCacheSize = 4096
)

// maxTokenBytes bounds the tokens sent for review: a service-account
// token (a JWT) is about 1 KiB.
const maxTokenBytes = 16 << 10

// TokenReviewer authenticates Kubernetes service-account tokens with a
// TokenReview (authentication.k8s.io/v1) of the API server: the token
// must be valid for one of Audiences (any audience the API server
// accepts when Audiences is empty) and belong to a service account. A
// token over 16 KiB is refused without a review.
// Successful reviews are cached for a minute, by the token's SHA-256, so
// that renewals do not hammer the API server. Use it as a pointer.
type TokenReviewer struct {
	Client    kubernetes.Interface
	Audiences []string

	mu    sync.Mutex // guards cache
	cache map[[sha256.Size]byte]reviewed
	now   func() time.Time // for tests; nil: time.Now
}

type reviewed struct {
	caller  security.Caller
	expires time.Time
}

// Name implements security.Authenticator.
func (r *TokenReviewer) Name() string { return "kubernetes" }

// Authenticate implements security.Authenticator.
func (r *TokenReviewer) Authenticate(ctx context.Context, token string) (security.Caller, error) {
	if token == "" {
		return security.Caller{}, security.Refuse("empty token")
	}
	if len(token) > maxTokenBytes {
		return security.Caller{}, security.Refuse("token of %d bytes: longer than %d", len(token), maxTokenBytes)
	}
	if r.Client == nil {
		return security.Caller{}, security.Refuse("token review: no Kubernetes client")
	}
	sum := sha256.Sum256([]byte(token))
	now := time.Now()
	if r.now != nil {
		now = r.now()
	}
	r.mu.Lock()
	if e, ok := r.cache[sum]; ok && now.Before(e.expires) {
		r.mu.Unlock()
		return e.caller, nil
	}
	r.mu.Unlock()

	review := &authenticationv1.TokenReview{Spec: authenticationv1.TokenReviewSpec{Token: token, Audiences: r.Audiences}}
	res, err := r.Client.AuthenticationV1().TokenReviews().Create(ctx, review, metav1.CreateOptions{})
	if err != nil {
		return security.Caller{}, security.Refuse("token review: %w", err)
	}
	st := res.Status
	if !st.Authenticated {
		return security.Caller{}, security.Refuse("token review: not authenticated: %s", st.Error)
	}
	if len(r.Audiences) > 0 && !slices.ContainsFunc(st.Audiences, func(a string) bool { return slices.Contains(r.Audiences, a) }) {
		return security.Caller{}, security.Refuse("token audience %q not accepted, want one of %q", st.Audiences, r.Audiences)
	}
	caller, ok := serviceAccount(st.User.Username)
	if !ok {
		return security.Caller{}, security.Refuse("not a service account: %s", st.User.Username)
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cache == nil {
		r.cache = map[[sha256.Size]byte]reviewed{}
	}
	if len(r.cache) >= reviewCacheSize {
		for k, e := range r.cache {
			if !now.Before(e.expires) {
				delete(r.cache, k)
			}
		}
		if len(r.cache) >= reviewCacheSize {
			clear(r.cache)
		}
	}
	r.cache[sum] = reviewed{caller: caller, expires: now.Add(reviewCacheTTL)}
	return caller, nil
}

// serviceAccount parses "system:serviceaccount:NS:SA". NS and SA must be
// segments a SPIFFE ID accepts, since the caller gets the ID
// spiffe://TRUST_DOMAIN/ns/NS/sa/SA: security.ParseID checks them.
func serviceAccount(username string) (security.Caller, bool) {
	rest, ok := strings.CutPrefix(username, "system:serviceaccount:")
	if !ok {
		return security.Caller{}, false
	}
	ns, sa, ok := strings.Cut(rest, ":")
	if !ok {
		return security.Caller{}, false
	}
	id, err := security.ParseID("spiffe://x/ns/" + ns + "/sa/" + sa)
	if err != nil {
		return security.Caller{}, false
	}
	return security.Caller{Namespace: id.Namespace, ServiceAccount: id.ServiceAccount}, true
}

var _ security.Authenticator = (*TokenReviewer)(nil)
