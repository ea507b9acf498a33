package eurekatest

import (
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func do(t *testing.T, method, url, body string, hdr ...string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func instance(id, extra string) string {
	return `{"instance":{"instanceId":"` + id + `","hostName":"` + id + `.local","app":"GREETER","ipAddr":"127.0.0.1",` +
		`"status":"UP","port":{"$":8080,"@enabled":true},"dataCenterInfo":{"name":"MyOwn"}` + extra + `}}`
}

// statuses reads an answer's instances as ID=STATUS[/ACTION], sorted by
// the order they come in.
func statuses(t *testing.T, body string) []string {
	t.Helper()
	var doc struct {
		Applications struct {
			Hash        string            `json:"apps__hashcode"`
			Application []json.RawMessage `json:"application"`
		} `json:"applications"`
	}
	if err := json.Unmarshal([]byte(body), &doc); err != nil {
		t.Fatalf("%v: %s", err, body)
	}
	out := []string{"hash=" + doc.Applications.Hash}
	for _, a := range doc.Applications.Application {
		var app struct {
			Instance []map[string]any `json:"instance"`
		}
		if err := json.Unmarshal(a, &app); err != nil {
			t.Fatalf("%v: %s", err, a)
		}
		for _, in := range app.Instance {
			s := in["instanceId"].(string) + "=" + in["status"].(string)
			if a, ok := in["actionType"]; ok {
				s += "/" + a.(string)
			}
			out = append(out, s)
		}
	}
	return out
}

// TestContract walks the REST operations the source and the js client
// rely on, with the answers Netflix's server gives.
func TestContract(t *testing.T) {
	s := New(Options{})
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	u := s.URL() + "/apps"
	for _, tt := range []struct {
		method, path, body string
		want               int
	}{
		{"POST", "/GREETER", `{"instance":{"app":"GREETER"}}`, 400}, // no id
		{"POST", "/GREETER", instance("g1", "")[:40], 400},          // not JSON
		{"POST", "/OTHER", instance("g1", ""), 400},                 // mismatched app
		{"POST", "/GREETER", strings.Replace(instance("g1", ""), `"dataCenterInfo":{"name":"MyOwn"}`, `"x":1`, 1), 400},
		{"POST", "/GREETER", instance("g1", ""), 204},
		{"POST", "/greeter", instance("g2", `,"metadata":{"zone":"z1"}`), 204}, // app names are upper-cased
		{"PUT", "/GREETER/g1", "", 200},
		{"PUT", "/GREETER/nope", "", 404},
		{"DELETE", "/GREETER/nope", "", 404},
		{"PUT", "/GREETER/g2/status?value=OUT_OF_SERVICE", "", 200},
		{"PUT", "/GREETER/g2/status?value=SLEEPING", "", 400},
		{"POST", "/GREETER", instance("g2", ""), 204}, // the override outlives re-registration
		{"GET", "/GREETER/g2", "", 200},
	} {
		if code, body := do(t, tt.method, u+tt.path, tt.body); code != tt.want {
			t.Errorf("%s %s: got %d %s, want %d", tt.method, tt.path, code, body, tt.want)
		}
	}
	if st, ok := s.Status("greeter", "g2"); !ok || st != "OUT_OF_SERVICE" {
		t.Errorf("g2 after re-registering: %q, %v; want OUT_OF_SERVICE", st, ok)
	}
	_, full := do(t, "GET", u, "", "Accept", "application/json")
	if diff := cmp.Diff(sorted([]string{"hash=OUT_OF_SERVICE_1_UP_1_", "g1=UP", "g2=OUT_OF_SERVICE"}), sorted(statuses(t, full))); diff != "" {
		t.Errorf("full fetch (-want +got):\n%s", diff)
	}
	if !strings.Contains(full, `"port":{"$":8080,"@enabled":"true"}`) || !strings.Contains(full, `"@class":"java.util.Collections$EmptyMap"`) {
		t.Errorf("the full fetch is not in Netflix's form: %s", full)
	}
	// Each changed instance once, with its latest action.
	_, delta := do(t, "GET", u+"/delta", "")
	if diff := cmp.Diff(sorted([]string{"hash=OUT_OF_SERVICE_1_UP_1_", "g1=UP/ADDED", "g2=OUT_OF_SERVICE/ADDED"}), sorted(statuses(t, delta))); diff != "" {
		t.Errorf("delta (-want +got):\n%s", diff)
	}
	// An override removed without a status: UNKNOWN, and the next renewal
	// is refused so the client registers again.
	do(t, "DELETE", u+"/GREETER/g2/status", "")
	if code, _ := do(t, "PUT", u+"/GREETER/g2", ""); code != 404 {
		t.Errorf("renewal of an UNKNOWN instance: got %d, want 404", code)
	}
	if code, _ := do(t, "DELETE", u+"/GREETER/g2", ""); code != 200 {
		t.Errorf("cancel: got %d, want 200", code)
	}
	_, delta = do(t, "GET", u+"/delta", "")
	if diff := cmp.Diff(sorted([]string{"hash=UP_1_", "g1=UP/ADDED", "g2=UNKNOWN/DELETED"}), sorted(statuses(t, delta))); diff != "" {
		t.Errorf("delta after the cancel (-want +got):\n%s", diff)
	}
	if code, _ := do(t, "GET", u, "", "Accept", "application/xml"); code != http.StatusNotAcceptable {
		t.Errorf("an XML fetch: got %d, want 406", code)
	}
}

// TestSingleAndAuth: lists of one as objects, and basic auth.
func TestSingleAndAuth(t *testing.T) {
	s := New(Options{Single: true, Username: "u", Password: "p"})
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	u := strings.Replace(s.URL(), "http://", "http://u:p@", 1) + "/apps"
	if code, _ := do(t, "GET", s.URL()+"/apps", ""); code != http.StatusUnauthorized {
		t.Errorf("no credentials: got %d, want 401", code)
	}
	do(t, "POST", u+"/GREETER", instance("g1", ""))
	_, full := do(t, "GET", u, "")
	if !strings.Contains(full, `"application":{"instance":{`) {
		t.Errorf("want the application and its instance as objects: %s", full)
	}
}

func sorted(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return out
}
