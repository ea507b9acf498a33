package eurekatest

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Options configure a Server.
type Options struct {
	// Path is where the API lives; default "/eureka" (Spring Cloud's).
	Path string
	// DefaultLease is a lease's duration when the registration names
	// none; default 90 s.
	DefaultLease time.Duration
	// DeltaRetention is how long a change stays in the delta; default 3
	// minutes.
	DeltaRetention time.Duration
	// Username and Password, when set, are required as basic auth.
	Username, Password string
	// Single renders lists of one as their element ("instance": {...}),
	// as XStream-era servers do.
	Single bool
}

// Server is an emulated Eureka server.
type Server struct {
	opts Options

	mu sync.Mutex // guards everything below
	// leases by upper-case application name and instance id.
	leases map[string]map[string]*lease
	// overrides are status overrides by instance id; they outlive
	// re-registration.
	overrides map[string]string
	// recent is the delta queue, oldest first.
	recent  []change
	version int64
	// loseDelta, when set, is the User-Agent prefix whose next delta
	// holding a change made since loseArmed is served without instances.
	loseDelta     *string
	loseArmed     time.Time
	fulls, deltas int
	lis           net.Listener
	srv           *http.Server
	addr          string
}

// lease is one registration.
type lease struct {
	app, id string
	// raw is the registration as sent, less what the server owns.
	raw         map[string]json.RawMessage
	status      string
	duration    time.Duration
	renewal     int
	registered  time.Time
	lastRenewed time.Time
	lastUpdated time.Time
}

// change is one entry of the delta queue: the instance as it was
// rendered when it changed.
type change struct {
	at       time.Time
	app, id  string
	instance map[string]any
}

// New returns a stopped Server; call Start.
func New(o Options) *Server {
	if o.Path == "" {
		o.Path = "/eureka"
	}
	o.Path = "/" + strings.Trim(o.Path, "/")
	if o.DefaultLease <= 0 {
		o.DefaultLease = 90 * time.Second
	}
	if o.DeltaRetention <= 0 {
		o.DeltaRetention = 3 * time.Minute
	}
	return &Server{opts: o, leases: map[string]map[string]*lease{}, overrides: map[string]string{}}
}

// Start serves on 127.0.0.1 (a free port the first time, the same port
// after a Stop). The registry survives a Stop and Start, as a server cut
// off from its clients keeps it, and its leases start over.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lis != nil {
		return errors.New("eurekatest: already started")
	}
	addr := s.addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("eurekatest: %w", err)
	}
	s.lis, s.addr = lis, lis.Addr().String()
	// No lease expired while the server was cut off from its clients
	// (Netflix's self-preservation keeps them when renewals stop
	// arriving): they count from now.
	now := time.Now()
	for _, ls := range s.leases {
		for _, l := range ls {
			l.lastRenewed = now
		}
	}
	s.srv = &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	srv := s.srv
	go srv.Serve(lis) //nolint:errcheck // ErrServerClosed after Stop
	return nil
}

// Stop closes the listener and every connection: clients get connection
// refused until Start.
func (s *Server) Stop() {
	s.mu.Lock()
	srv := s.srv
	s.srv, s.lis = nil, nil
	s.mu.Unlock()
	if srv != nil {
		srv.Close() //nolint:errcheck // nothing to do about it
	}
}

// URL is the service URL clients are given: http://ADDR/PATH.
func (s *Server) URL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return "http://" + s.addr + s.opts.Path
}

// LoseNextDelta makes the next delta answer to a client whose User-Agent
// starts with userAgent, and that holds a change made from now on, carry
// no instances but the true appsHashCode, as a delta that missed a change
// would.
func (s *Server) LoseNextDelta(userAgent string) {
	s.mu.Lock()
	s.loseDelta, s.loseArmed = &userAgent, time.Now()
	s.mu.Unlock()
}

// losing reports whether r's delta is the one LoseNextDelta asked for.
func (s *Server) losing(r *http.Request) bool {
	if s.loseDelta == nil || !strings.HasPrefix(r.UserAgent(), *s.loseDelta) {
		return false
	}
	for _, c := range s.recent {
		if !c.at.Before(s.loseArmed) {
			s.loseDelta = nil
			return true
		}
	}
	return false
}

// Fetches counts the full and delta fetches served.
func (s *Server) Fetches() (full, delta int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fulls, s.deltas
}

// Status returns an instance's status as served, and whether it is
// registered.
func (s *Server) Status(app, id string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lis != nil {
		s.evict(time.Now())
	}
	l := s.leases[strings.ToUpper(app)][id]
	if l == nil {
		return "", false
	}
	return s.effective(l), true
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s.opts.Username != "" {
		u, p, ok := r.BasicAuth()
		if !ok || subtle.ConstantTimeCompare([]byte(u), []byte(s.opts.Username)) != 1 ||
			subtle.ConstantTimeCompare([]byte(p), []byte(s.opts.Password)) != 1 {
			w.Header().Set("WWW-Authenticate", `Basic realm="eureka"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
	}
	rest, ok := strings.CutPrefix(r.URL.Path, s.opts.Path+"/apps")
	if !ok || (rest != "" && rest[0] != '/') {
		http.NotFound(w, r)
		return
	}
	parts := strings.Split(strings.Trim(rest, "/"), "/")
	if parts[0] == "" {
		parts = nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	s.evict(now)
	switch {
	case len(parts) == 0 && r.Method == http.MethodGet:
		s.fulls++
		s.writeApps(w, r, s.all())
	case len(parts) == 1 && parts[0] == "delta" && r.Method == http.MethodGet:
		s.deltas++
		s.writeDelta(w, r, now)
	case len(parts) == 1 && r.Method == http.MethodPost:
		s.register(w, r, strings.ToUpper(parts[0]), now)
	case len(parts) == 1 && r.Method == http.MethodGet:
		s.getApp(w, r, strings.ToUpper(parts[0]))
	case len(parts) == 2 || len(parts) == 3:
		app, id := strings.ToUpper(parts[0]), parts[1]
		l := s.leases[app][id]
		if l == nil {
			http.Error(w, "no such instance", http.StatusNotFound)
			return
		}
		sub := ""
		if len(parts) == 3 {
			sub = parts[2]
		}
		s.instanceOp(w, r, l, sub, now)
	default:
		http.Error(w, "not part of the emulated API", http.StatusNotFound)
	}
}

func (s *Server) instanceOp(w http.ResponseWriter, r *http.Request, l *lease, sub string, now time.Time) {
	switch {
	case sub == "" && r.Method == http.MethodGet:
		s.writeJSON(w, r, map[string]any{"instance": s.render(l, "")})
	case sub == "" && r.Method == http.MethodPut:
		// A renewal of an instance whose status is UNKNOWN (an override
		// removed without a new status) is refused: the client registers
		// again, as with Netflix's DownOrStartingRule.
		if s.effective(l) == "UNKNOWN" {
			http.Error(w, "status unknown; register again", http.StatusNotFound)
			return
		}
		l.lastRenewed = now
		l.renewal++
		if st := strings.ToUpper(r.URL.Query().Get("status")); st != "" && st != l.status {
			l.status = st
			s.changed(l, "MODIFIED", now)
		}
		w.WriteHeader(http.StatusOK)
	case sub == "" && r.Method == http.MethodDelete:
		s.remove(l, now)
		w.WriteHeader(http.StatusOK)
	case sub == "status" && r.Method == http.MethodPut:
		v := strings.ToUpper(r.URL.Query().Get("value"))
		if !validStatus(v) {
			http.Error(w, "bad status value", http.StatusBadRequest)
			return
		}
		s.overrides[l.id] = v
		s.changed(l, "MODIFIED", now)
		w.WriteHeader(http.StatusOK)
	case sub == "status" && r.Method == http.MethodDelete:
		v := strings.ToUpper(r.URL.Query().Get("value"))
		if v == "" {
			v = "UNKNOWN"
		}
		if !validStatus(v) {
			http.Error(w, "bad status value", http.StatusBadRequest)
			return
		}
		delete(s.overrides, l.id)
		l.status = v
		s.changed(l, "MODIFIED", now)
		w.WriteHeader(http.StatusOK)
	case sub == "metadata" && r.Method == http.MethodPut:
		md := map[string]string{}
		if b, ok := l.raw["metadata"]; ok {
			json.Unmarshal(b, &md) //nolint:errcheck // a registration's odd metadata is replaced
		}
		delete(md, "@class")
		for k, vs := range r.URL.Query() {
			md[k] = vs[len(vs)-1]
		}
		b, err := json.Marshal(md)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		l.raw["metadata"] = b
		s.changed(l, "MODIFIED", now)
		w.WriteHeader(http.StatusOK)
	default:
		http.Error(w, "not part of the emulated API", http.StatusMethodNotAllowed)
	}
}

func validStatus(s string) bool {
	switch s {
	case "UP", "DOWN", "STARTING", "OUT_OF_SERVICE", "UNKNOWN":
		return true
	}
	return false
}

// effective is the status served: the override, else the instance's own.
func (s *Server) effective(l *lease) string {
	if o := s.overrides[l.id]; o != "" && o != "UNKNOWN" {
		return o
	}
	return l.status
}

// evict removes the leases that expired.
func (s *Server) evict(now time.Time) {
	for _, ls := range s.leases {
		for _, l := range ls {
			if now.Sub(l.lastRenewed) > l.duration {
				s.remove(l, now)
			}
		}
	}
	keep := s.recent[:0]
	for _, c := range s.recent {
		if now.Sub(c.at) <= s.opts.DeltaRetention {
			keep = append(keep, c)
		}
	}
	s.recent = keep
}

// remove cancels a lease (and its override, as Netflix's internalCancel
// does).
func (s *Server) remove(l *lease, now time.Time) {
	delete(s.leases[l.app], l.id)
	if len(s.leases[l.app]) == 0 {
		delete(s.leases, l.app)
	}
	delete(s.overrides, l.id)
	s.changed(l, "DELETED", now)
}

// changed records a change in the delta queue.
func (s *Server) changed(l *lease, action string, now time.Time) {
	l.lastUpdated = now
	s.version++
	s.recent = append(s.recent, change{at: now, app: l.app, id: l.id, instance: s.render(l, action)})
}

// appsList is the applications and their rendered instances, by name.
type appsList map[string][]map[string]any

// all renders the whole registry.
func (s *Server) all() appsList {
	out := appsList{}
	for app, ls := range s.leases {
		for _, l := range ls {
			out[app] = append(out[app], s.render(l, ""))
		}
	}
	return out
}

// hash is the registry's appsHashCode: STATUS_COUNT_ for each status, in
// the order of the names (Applications.getReconcileHashCode).
func (s *Server) hash() string {
	counts := map[string]int{}
	for _, ls := range s.leases {
		for _, l := range ls {
			counts[s.effective(l)]++
		}
	}
	var b strings.Builder
	for _, st := range []string{"DOWN", "OUT_OF_SERVICE", "STARTING", "UNKNOWN", "UP"} { // sorted
		if n := counts[st]; n > 0 {
			fmt.Fprintf(&b, "%s_%d_", st, n)
		}
	}
	return b.String()
}

func (s *Server) writeDelta(w http.ResponseWriter, r *http.Request, now time.Time) {
	out := appsList{}
	if !s.losing(r) {
		// Each changed instance once, with its latest change.
		type key struct{ app, id string }
		latest := map[key]int{}
		for i, c := range s.recent {
			if now.Sub(c.at) <= s.opts.DeltaRetention {
				latest[key{c.app, c.id}] = i
			}
		}
		for i, c := range s.recent {
			if latest[key{c.app, c.id}] == i {
				out[c.app] = append(out[c.app], c.instance)
			}
		}
	}
	s.writeApps(w, r, out)
}

func (s *Server) getApp(w http.ResponseWriter, r *http.Request, app string) {
	ls := s.leases[app]
	if len(ls) == 0 {
		http.Error(w, "no such application", http.StatusNotFound)
		return
	}
	var ins []map[string]any
	for _, l := range ls {
		ins = append(ins, s.render(l, ""))
	}
	s.writeJSON(w, r, map[string]any{"application": s.application(app, ins)})
}

func (s *Server) application(name string, ins []map[string]any) map[string]any {
	var list any = ins
	if s.opts.Single && len(ins) == 1 {
		list = ins[0]
	}
	return map[string]any{"name": name, "instance": list}
}

func (s *Server) writeApps(w http.ResponseWriter, r *http.Request, apps appsList) {
	list := []map[string]any{}
	for name, ins := range apps {
		list = append(list, s.application(name, ins))
	}
	var application any = list
	if s.opts.Single && len(list) == 1 {
		application = list[0]
	}
	s.writeJSON(w, r, map[string]any{"applications": map[string]any{
		"versions__delta": fmt.Sprint(s.version),
		"apps__hashcode":  s.hash(),
		"application":     application,
	}})
}

func (s *Server) writeJSON(w http.ResponseWriter, r *http.Request, v any) {
	if a := r.Header.Get("Accept"); a != "" && !strings.Contains(a, "json") && !strings.Contains(a, "*/*") {
		http.Error(w, "the emulation speaks JSON only", http.StatusNotAcceptable)
		return
	}
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(b) //nolint:errcheck // the client went away
}
