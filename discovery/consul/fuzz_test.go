package consul

import (
	"encoding/json"
	"testing"
)

// FuzzBuild feeds the source a Consul health answer as it comes off the
// wire (JSON, per service name): it never panics, and every service it
// reports validates (bad registrations are skipped, not passed on).
func FuzzBuild(f *testing.F) {
	e := entry("a", "127.0.0.1", 9001, "passing")
	e.Service.Tags = []string{"tender.namespace=shop", "tender.vip=10.96.0.30"}
	e.Service.Meta = map[string]string{"tender_protocol": "grpc", "tender_port": "9000"}
	seed, err := json.Marshal(map[string][]healthEntry{"greeter": {e, entry("b", "", 0, "warning")}})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed)
	f.Add([]byte(`{"x":[{"Service":{"ID":"1","Service":"x","Address":"::1","Port":70000,"Tags":["tender.vip=nope"]}}]}`))
	s, err := New(Options{Addr: "127.0.0.1:8500", IncludeWarning: true})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var entries map[string][]healthEntry
		if json.Unmarshal(data, &entries) != nil {
			return
		}
		for _, svc := range s.build(entries) {
			if err := svc.Validate(); err != nil {
				t.Fatalf("reported an invalid service: %v", err)
			}
		}
	})
}
