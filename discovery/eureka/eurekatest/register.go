package eurekatest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// registration is what the server reads of a registered instance.
type registration struct {
	InstanceID string `json:"instanceId"`
	HostName   string `json:"hostName"`
	App        string `json:"app"`
	IPAddr     string `json:"ipAddr"`
	Status     string `json:"status"`
	VIPAddress string `json:"vipAddress"`
	LeaseInfo  *struct {
		RenewalIntervalInSecs int `json:"renewalIntervalInSecs"`
		DurationInSecs        int `json:"durationInSecs"`
	} `json:"leaseInfo"`
	DataCenterInfo *struct {
		Name string `json:"name"`
	} `json:"dataCenterInfo"`
}

// register handles POST /apps/APP, validating as Netflix's
// ApplicationResource.addInstance does.
func (s *Server) register(w http.ResponseWriter, r *http.Request, app string, now time.Time) {
	b, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var body struct {
		Instance map[string]json.RawMessage `json:"instance"`
	}
	if err := json.Unmarshal(b, &body); err != nil || body.Instance == nil {
		http.Error(w, "want {\"instance\": {...}} in JSON", http.StatusBadRequest)
		return
	}
	var reg registration
	raw, _ := json.Marshal(body.Instance) //nolint:errcheck // it was just decoded
	if err := json.Unmarshal(raw, &reg); err != nil {
		http.Error(w, "instance: "+err.Error(), http.StatusBadRequest)
		return
	}
	id := reg.InstanceID
	if id == "" {
		id = reg.HostName
	}
	switch {
	case id == "":
		http.Error(w, "Missing instanceId", http.StatusBadRequest)
		return
	case reg.HostName == "":
		http.Error(w, "Missing hostname", http.StatusBadRequest)
		return
	case reg.IPAddr == "":
		http.Error(w, "Missing ip address", http.StatusBadRequest)
		return
	case reg.App == "":
		http.Error(w, "Missing appName", http.StatusBadRequest)
		return
	case !strings.EqualFold(reg.App, app):
		http.Error(w, "Mismatched appName, expecting "+app+" but was "+reg.App, http.StatusBadRequest)
		return
	case reg.DataCenterInfo == nil:
		http.Error(w, "Missing dataCenterInfo", http.StatusBadRequest)
		return
	}
	for _, k := range []string{"port", "securePort"} {
		if v, ok := body.Instance[k]; ok {
			if _, _, err := readPort(v); err != nil {
				http.Error(w, k+": "+err.Error(), http.StatusBadRequest)
				return
			}
		}
	}
	status := strings.ToUpper(reg.Status)
	if status == "" {
		status = "UP"
	}
	if !validStatus(status) {
		status = "UNKNOWN"
	}
	l := &lease{app: app, id: id, raw: body.Instance, status: status, duration: s.opts.DefaultLease,
		renewal: 30, registered: now, lastRenewed: now}
	if li := reg.LeaseInfo; li != nil {
		if li.DurationInSecs > 0 {
			l.duration = time.Duration(li.DurationInSecs) * time.Second
		}
		if li.RenewalIntervalInSecs > 0 {
			l.renewal = li.RenewalIntervalInSecs
		}
	}
	if old := s.leases[app][id]; old != nil {
		l.registered = old.registered
	}
	for _, k := range []string{"status", "overriddenStatus", "overriddenstatus", "leaseInfo", "actionType",
		"lastUpdatedTimestamp", "lastDirtyTimestamp", "isCoordinatingDiscoveryServer"} {
		delete(l.raw, k)
	}
	if s.leases[app] == nil {
		s.leases[app] = map[string]*lease{}
	}
	s.leases[app][id] = l
	s.changed(l, "ADDED", now)
	w.WriteHeader(http.StatusNoContent)
}

// readPort reads {"$": N, "@enabled": B} (N a number or a string, B a
// boolean or a string) or a bare N.
func readPort(b json.RawMessage) (int, bool, error) {
	var obj struct {
		Number  any `json:"$"`
		Enabled any `json:"@enabled"`
	}
	if err := json.Unmarshal(b, &obj); err != nil {
		var n any
		if json.Unmarshal(b, &n) != nil {
			return 0, false, err
		}
		obj.Number, obj.Enabled = n, true
	}
	num := 0
	switch v := obj.Number.(type) {
	case float64:
		num = int(v)
	case string:
		n, err := strconv.Atoi(v)
		if err != nil {
			return 0, false, fmt.Errorf("port %q", v)
		}
		num = n
	case nil:
	default:
		return 0, false, fmt.Errorf("port %v", v)
	}
	enabled := true
	switch v := obj.Enabled.(type) {
	case bool:
		enabled = v
	case string:
		enabled = v == "true"
	}
	return num, enabled, nil
}

// render is an instance as the server sends it: the registration with the
// server's fields (status, overriddenStatus, leaseInfo, timestamps, an
// action type in a delta) and its ports and maps in Netflix's form.
func (s *Server) render(l *lease, action string) map[string]any {
	out := make(map[string]any, len(l.raw)+8)
	for k, v := range l.raw {
		out[k] = v
	}
	for _, k := range []string{"port", "securePort"} {
		n, en, _ := readPort(l.raw[k]) //nolint:errcheck // checked at registration
		if k == "securePort" && l.raw[k] == nil {
			n, en = 443, false
		}
		out[k] = map[string]any{"$": n, "@enabled": strconv.FormatBool(en)}
	}
	md := map[string]any{}
	if b, ok := l.raw["metadata"]; ok {
		json.Unmarshal(b, &md) //nolint:errcheck // odd metadata is sent as none
	}
	if len(md) == 0 {
		md = map[string]any{"@class": "java.util.Collections$EmptyMap"}
	}
	out["metadata"] = md
	dci := map[string]any{}
	json.Unmarshal(l.raw["dataCenterInfo"], &dci) //nolint:errcheck // checked at registration
	if _, ok := dci["@class"]; !ok {
		dci["@class"] = "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo"
	}
	out["dataCenterInfo"] = dci
	out["app"] = l.app
	out["status"] = s.effective(l)
	override := s.overrides[l.id]
	if override == "" {
		override = "UNKNOWN"
	}
	out["overriddenStatus"] = override
	ms := func(t time.Time) int64 { return t.UnixMilli() }
	out["leaseInfo"] = map[string]any{
		"renewalIntervalInSecs": l.renewal, "durationInSecs": int(l.duration / time.Second),
		"registrationTimestamp": ms(l.registered), "lastRenewalTimestamp": ms(l.lastRenewed),
		"evictionTimestamp": 0, "serviceUpTimestamp": ms(l.registered),
	}
	out["isCoordinatingDiscoveryServer"] = "false"
	out["lastUpdatedTimestamp"] = strconv.FormatInt(ms(l.lastUpdated), 10)
	out["lastDirtyTimestamp"] = strconv.FormatInt(ms(l.lastUpdated), 10)
	if action != "" {
		out["actionType"] = action
	}
	return out
}
