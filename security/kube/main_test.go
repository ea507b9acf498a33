package kube

import (
	"context"
	"testing"

	"go.uber.org/goleak"

	"github.com/tender-mesh/tender/security"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func mustCA(t *testing.T, opts security.CAOptions) *security.CA {
	t.Helper()
	ca, err := security.NewCA(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}
