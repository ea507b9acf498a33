package telemetry

import (
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
)

// HandleProfiles serves Go's profiles under /debug/pprof/ on mux, to
// clients on loopback only (kubectl port-forward, or a shell in the
// pod): they cost CPU and reveal internals.
func HandleProfiles(mux *http.ServeMux) {
	mux.Handle("/debug/pprof/", LoopbackOnly(http.HandlerFunc(pprof.Index)))
	mux.Handle("/debug/pprof/profile", LoopbackOnly(http.HandlerFunc(pprof.Profile)))
}

// LoopbackOnly refuses clients from outside the pod: for what costs CPU,
// reveals internals or changes state (profiles, a CA root rotation).
func LoopbackOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		if a, err := netip.ParseAddr(host); err != nil || !a.Unmap().IsLoopback() {
			http.Error(w, r.URL.Path+" is served on loopback only (kubectl port-forward, or a shell in the pod)", http.StatusForbidden)
			return
		}
		h.ServeHTTP(w, r)
	})
}
