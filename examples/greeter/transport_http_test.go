package greeter

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func newTestHTTPServer(t *testing.T, instance string) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(NewHTTPHandler(MakeEndpoints(NewService(instance)), instance, nil))
	t.Cleanup(srv.Close)
	return srv
}

func TestHTTPHandler(t *testing.T) {
	srv := newTestHTTPServer(t, "h1")
	tests := []struct {
		name       string
		method     string
		path       string
		body       string
		wantStatus int
		wantJSON   map[string]string // exact JSON body, when set
		wantError  bool              // JSON body {"error": non-empty}
		wantText   string            // exact text body, when wantJSON is nil and wantError false
	}{
		{name: "GET", method: http.MethodGet, path: "/greet?name=World", wantStatus: http.StatusOK,
			wantJSON: map[string]string{"message": "Hello, World", "instance": "h1"}},
		{name: "GET escaped", method: http.MethodGet, path: "/greet?name=Ada+Lovelace", wantStatus: http.StatusOK,
			wantJSON: map[string]string{"message": "Hello, Ada Lovelace", "instance": "h1"}},
		{name: "POST", method: http.MethodPost, path: "/greet", body: `{"name":"Bob"}`, wantStatus: http.StatusOK,
			wantJSON: map[string]string{"message": "Hello, Bob", "instance": "h1"}},
		{name: "GET empty name", method: http.MethodGet, path: "/greet", wantStatus: http.StatusBadRequest,
			wantJSON: map[string]string{"error": ErrEmptyName.Error()}},
		{name: "POST empty name", method: http.MethodPost, path: "/greet", body: `{"name":""}`, wantStatus: http.StatusBadRequest,
			wantJSON: map[string]string{"error": ErrEmptyName.Error()}},
		{name: "POST bad JSON", method: http.MethodPost, path: "/greet", body: `{"name":`, wantStatus: http.StatusBadRequest, wantError: true},
		{name: "POST no body", method: http.MethodPost, path: "/greet", wantStatus: http.StatusBadRequest, wantError: true},
		{name: "healthz", method: http.MethodGet, path: "/healthz", wantStatus: http.StatusOK, wantText: "ok"},
		{name: "status 503", method: http.MethodGet, path: "/status/503", wantStatus: http.StatusServiceUnavailable, wantText: "Service Unavailable"},
		{name: "status 200", method: http.MethodGet, path: "/status/200", wantStatus: http.StatusOK, wantText: "OK"},
		{name: "status not a number", method: http.MethodGet, path: "/status/abc", wantStatus: http.StatusBadRequest, wantError: true},
		{name: "status out of range", method: http.MethodGet, path: "/status/99", wantStatus: http.StatusBadRequest, wantError: true},
		{name: "echo small", method: http.MethodPost, path: "/echo", body: "hello", wantStatus: http.StatusOK, wantText: "hello"},
		{name: "bytes", method: http.MethodGet, path: "/bytes/5", wantStatus: http.StatusOK, wantText: "\x00\x01\x02\x03\x04"},
		{name: "bytes wrap", method: http.MethodGet, path: "/bytes/253", wantStatus: http.StatusOK, wantText: patternBytes(253)},
		{name: "bytes none", method: http.MethodGet, path: "/bytes/0", wantStatus: http.StatusOK, wantText: ""},
		{name: "bytes negative", method: http.MethodGet, path: "/bytes/-1", wantStatus: http.StatusBadRequest, wantError: true},
		{name: "bytes too many", method: http.MethodGet, path: "/bytes/99999999999999", wantStatus: http.StatusBadRequest, wantError: true},
		{name: "unknown path", method: http.MethodGet, path: "/nope", wantStatus: http.StatusNotFound, wantText: "404 page not found\n"},
	}
	client := srv.Client()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequestWithContext(t.Context(), tt.method, srv.URL+tt.path, strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatalf("%s %s: %v", tt.method, tt.path, err)
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatalf("read body: %v", err)
			}
			if resp.StatusCode != tt.wantStatus {
				t.Errorf("status: got %d, want %d (body %q)", resp.StatusCode, tt.wantStatus, body)
			}
			if got := resp.Header.Get("X-Instance"); got != "h1" {
				t.Errorf("X-Instance: got %q, want %q", got, "h1")
			}
			switch {
			case tt.wantJSON != nil || tt.wantError:
				if got, want := resp.Header.Get("Content-Type"), "application/json; charset=utf-8"; got != want {
					t.Errorf("Content-Type: got %q, want %q", got, want)
				}
				var got map[string]string
				if err := json.Unmarshal(body, &got); err != nil {
					t.Fatalf("body %q: got invalid JSON (%v), want JSON", body, err)
				}
				if tt.wantError {
					if len(got) != 1 || got["error"] == "" {
						t.Errorf("body: got %v, want {\"error\": non-empty}", got)
					}
					return
				}
				if diff := cmp.Diff(tt.wantJSON, got); diff != "" {
					t.Errorf("body (-want +got):\n%s", diff)
				}
			default:
				if diff := cmp.Diff(tt.wantText, string(body)); diff != "" {
					t.Errorf("body (-want +got):\n%s", diff)
				}
			}
		})
	}
}

func TestHTTPEchoLargeBody(t *testing.T) {
	srv := newTestHTTPServer(t, "h1")
	payload := make([]byte, 4<<20)
	if _, err := rand.Read(payload); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		body    func() io.Reader // a reader of unknown length is sent chunked
		wantLen string
	}{
		{name: "content length", body: func() io.Reader { return bytes.NewReader(payload) }, wantLen: "4194304"},
		{name: "chunked", body: func() io.Reader { return io.MultiReader(bytes.NewReader(payload)) }, wantLen: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, srv.URL+"/echo", tt.body())
			if err != nil {
				t.Fatal(err)
			}
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatalf("POST /echo: %v", err)
			}
			defer resp.Body.Close()
			got, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatalf("read body: %v", err)
			}
			if resp.StatusCode != http.StatusOK {
				t.Errorf("status: got %d, want %d", resp.StatusCode, http.StatusOK)
			}
			if got := resp.Header.Get("Content-Length"); got != tt.wantLen {
				t.Errorf("Content-Length: got %q, want %q", got, tt.wantLen)
			}
			if diff := cmp.Diff(digest(payload), digest(got)); diff != "" {
				t.Errorf("echoed body (%d bytes) differs from the %d bytes sent (-want +got):\n%s", len(got), len(payload), diff)
			}
		})
	}
}

// digest summarizes a large payload for cmp.Diff.
func digest(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// patternBytes is what GET /bytes/{n} sends: byte i is i mod 251.
func patternBytes(n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i % 251)
	}
	return string(b)
}
