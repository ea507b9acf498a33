package main

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tender-mesh/tender/discovery"
	"github.com/tender-mesh/tender/security"
	"github.com/tender-mesh/tender/telemetry"
	"github.com/tender-mesh/tender/xds"
)

// newAdmin serves /metrics, /healthz, /readyz, /debug/config and
// /debug/proxies, and Go profiles on /debug/pprof/ for loopback clients.
func newAdmin(reg *prometheus.Registry, registry *discovery.Registry, srv *xds.Server, ca *mesh) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{EnableOpenMetrics: true}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "ok\n") //nolint:errcheck // the client went away
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		ready := registry.Ready() && srv.Ready()
		code := http.StatusOK
		if !ready {
			code = http.StatusServiceUnavailable
		}
		writeJSON(w, code, map[string]any{"ready": ready, "sources": registry.Status()})
	})
	mux.HandleFunc("GET /debug/config", func(w http.ResponseWriter, _ *http.Request) {
		d, ok, err := srv.Dump()
		switch {
		case err != nil:
			http.Error(w, err.Error(), http.StatusInternalServerError)
		case !ok:
			http.Error(w, "no config yet: discovery sources have not synced", http.StatusServiceUnavailable)
		default:
			writeJSON(w, http.StatusOK, d)
		}
	})
	mux.HandleFunc("GET /debug/proxies", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, srv.Proxies())
	})
	if ca != nil {
		// The trust bundle, and a rotation of the self-made root: a new
		// root signs from now on, the old one stays trusted until it
		// expires, and the bundle goes to every sidecar over SDS.
		mux.HandleFunc("GET /debug/ca", func(w http.ResponseWriter, _ *http.Request) {
			writeJSON(w, http.StatusOK, ca.info())
		})
		mux.Handle("POST /debug/ca/rotate-root", telemetry.LoopbackOnly(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if err := ca.ca.RotateRoot(r.Context()); err != nil {
				code := http.StatusInternalServerError
				if errors.Is(err, security.ErrOperatorCA) {
					code = http.StatusConflict
				}
				http.Error(w, "rotate root: "+err.Error(), code)
				return
			}
			ca.logger.Info("root rotated; the previous root stays trusted until it expires")
			writeJSON(w, http.StatusOK, ca.info())
		})))
	}
	telemetry.HandleProfiles(mux)
	return mux
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v) //nolint:errcheck // the client went away; nothing to do
}
