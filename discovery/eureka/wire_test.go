package eureka

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestDecode(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want *applications // nil: an error wrapping ErrMalformed
	}{
		{
			name: "arrays, port objects with a number and a string flag, metadata with @class",
			in: `{"applications":{"versions__delta":"1","apps__hashcode":"UP_1_","application":[{"name":"GREETER","instance":[
				{"instanceId":"g1","hostName":"h1","app":"GREETER","ipAddr":"10.0.0.1","status":"UP","overriddenStatus":"UNKNOWN",
				 "port":{"$":8080,"@enabled":"true"},"securePort":{"$":443,"@enabled":"false"},"vipAddress":"greeter",
				 "dataCenterInfo":{"@class":"com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo","name":"MyOwn"},
				 "metadata":{"@class":"java.util.Collections$EmptyMap"}}]}]}}`,
			want: &applications{VersionsDelta: "1", AppsHashCode: "UP_1_", Application: list[application]{{Name: "GREETER", Instance: list[instance]{{
				InstanceID: "g1", HostName: "h1", App: "GREETER", IPAddr: "10.0.0.1", Status: "UP", OverriddenStatus: "UNKNOWN",
				Port: port{8080, true}, SecurePort: port{443, false}, VIPAddress: "greeter", DataCenterInfo: dataCenterInfo{Name: "MyOwn"}}}}}},
		},
		{
			name: "a single application and instance as objects, port as strings, metadata absent, versions__delta a number",
			in: `{"applications":{"versions__delta":7,"apps__hashcode":"DOWN_1_","application":{"name":"A","instance":
				{"hostName":"h2","app":"A","ipAddr":"10.0.0.2","status":"DOWN","port":{"@enabled":"true","$":"9090"}}}}}`,
			want: &applications{VersionsDelta: "7", AppsHashCode: "DOWN_1_", Application: list[application]{{Name: "A", Instance: list[instance]{{
				HostName: "h2", App: "A", IPAddr: "10.0.0.2", Status: "DOWN", Port: port{9090, true}}}}}},
		},
		{
			name: "boolean flag, bare port number, metadata values of other types, Amazon zone, lower-case overriddenstatus",
			in: `{"applications":{"application":[{"name":"B","instance":[{"app":"B","hostName":"h3","ipAddr":"10.0.0.3",
				"overriddenstatus":"OUT_OF_SERVICE","port":8081,"securePort":{"$":8443,"@enabled":true},
				"dataCenterInfo":{"name":"Amazon","metadata":{"availability-zone":"us-east-1a","instance-id":"i-1"}},
				"metadata":{"zone":"z1","weight":3,"canary":false,"nested":{"a":1},"gone":null}}]}]}}`,
			want: &applications{Application: list[application]{{Name: "B", Instance: list[instance]{{
				HostName: "h3", App: "B", IPAddr: "10.0.0.3", OverriddenStatus: "OUT_OF_SERVICE", Port: port{8081, true}, SecurePort: port{8443, true},
				DataCenterInfo: dataCenterInfo{Name: "Amazon", Metadata: metadata{"availability-zone": "us-east-1a", "instance-id": "i-1"}},
				Metadata:       metadata{"zone": "z1", "weight": "3", "canary": "false"}}}}}},
		},
		{
			name: "an empty registry",
			in:   `{"applications":{"versions__delta":"1","apps__hashcode":"","application":[]}}`,
			want: &applications{VersionsDelta: "1"},
		},
		{name: "not JSON", in: `<applications/>`},
		{name: "no applications", in: `{"application":[]}`},
		{name: "applications not an object", in: `{"applications":[1]}`},
		{name: "an instance that is a string", in: `{"applications":{"application":{"name":"A","instance":"x"}}}`},
		{name: "a port that is not a number", in: `{"applications":{"application":{"instance":{"port":{"$":"http"}}}}}`},
		{name: "an @enabled that is not a boolean", in: `{"applications":{"application":{"instance":{"port":{"$":1,"@enabled":"yes"}}}}}`},
		{name: "metadata that is a list", in: `{"applications":{"application":{"instance":{"metadata":["a"]}}}}`},
		{name: "JSON null", in: `null`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decode([]byte(tt.in))
			if tt.want == nil {
				if !errors.Is(err, ErrMalformed) {
					t.Fatalf("got %+v, %v; want an error wrapping ErrMalformed", got, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("decode (-want +got):\n%s", diff)
			}
		})
	}
}

func TestInstanceID(t *testing.T) {
	for _, tt := range []struct {
		in   instance
		want string
	}{
		{instance{InstanceID: "i", HostName: "h"}, "i"},
		{instance{HostName: "h", DataCenterInfo: dataCenterInfo{Name: "Amazon", Metadata: metadata{"instance-id": "i-9"}}}, "i-9"},
		{instance{HostName: "h", DataCenterInfo: dataCenterInfo{Name: "MyOwn", Metadata: metadata{"instance-id": "i-9"}}}, "h"},
	} {
		if got := tt.in.ID(); got != tt.want {
			t.Errorf("ID of %+v: got %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestReconcileHash(t *testing.T) {
	if got, want := reconcileHash(map[string]int{"UP": 3, "DOWN": 1, "OUT_OF_SERVICE": 2, "STARTING": 0}), "DOWN_1_OUT_OF_SERVICE_2_UP_3_"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if got := reconcileHash(nil); got != "" {
		t.Errorf("empty registry: got %q, want \"\"", got)
	}
}

// FuzzDecode feeds arbitrary answers to the decoder and what follows it
// (the table, its hash, a delta applied, the mapping): none may panic, and
// what decodes must survive a round trip through the server's format.
func FuzzDecode(f *testing.F) {
	for _, seed := range []string{
		`{"applications":{"versions__delta":"1","apps__hashcode":"UP_1_","application":[{"name":"G","instance":[{"instanceId":"g1","app":"G","ipAddr":"10.0.0.1","status":"UP","port":{"$":8080,"@enabled":"true"},"securePort":{"$":443,"@enabled":"false"},"vipAddress":"g,h","metadata":{"@class":"java.util.Collections$EmptyMap"}}]}]}}`,
		`{"applications":{"application":{"name":"A","instance":{"hostName":"h","app":"A","ipAddr":"::1","status":"OUT_OF_SERVICE","port":{"$":"1","@enabled":true},"actionType":"ADDED","metadata":{"tender.dev/protocol":"grpc","tender.dev/port":"80","zone":"z"}}}}}`,
		`{"applications":{"application":[{"instance":[{"hostName":"x","actionType":"DELETED"},{"hostName":"y","actionType":"MODIFIED","port":7}]}]}}`,
		// An application's only instance deleted and added again in one
		// delta: apply once wrote to the dropped application (a panic).
		`{"applications":{"application":{"instance":[{"hostName":"x","actionType":"DELETED"},{"hostName":"x","actionType":"ADDED"}]}}}`,
		`{"applications":null}`, `{"applications":{"application":[null,{}]}}`, `[]`, `"x"`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		apps, err := decode(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		tab := newTable(apps)
		_ = tab.hash()
		if next, _, err := tab.apply(apps); err == nil {
			_ = next.hash()
		} else if !errors.Is(err, ErrMalformed) {
			t.Fatalf("apply: error %v does not wrap ErrMalformed", err)
		}
		s, err := New(Options{URLs: []string{"http://127.0.0.1:1/eureka"}})
		if err != nil {
			t.Fatal(err)
		}
		for _, svc := range s.build(tab) {
			if err := svc.Validate(); err != nil {
				t.Fatalf("build made an invalid service: %v", err)
			}
		}
		again, err := json.Marshal(map[string]any{"applications": apps})
		if err != nil {
			t.Fatalf("re-encoding %+v: %v", apps, err)
		}
		back, err := decode(again)
		if err != nil {
			t.Fatalf("decoding the re-encoded %s: %v", again, err)
		}
		if diff := cmp.Diff(newTable(apps), newTable(back)); diff != "" {
			t.Fatalf("round trip changed the registry (-first +second):\n%s", diff)
		}
	})
}
