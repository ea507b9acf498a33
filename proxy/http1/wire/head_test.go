package wire

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// crlf turns the readable "\n" line ends of a test head into CRLF, and
// "{LF}" into a bare LF.
func crlf(s string) []byte {
	s = strings.ReplaceAll(s, "\n", "\r\n")
	return []byte(strings.ReplaceAll(s, "{LF}", "\n"))
}

// summary is what a test compares of a parsed head.
type summary struct {
	Method, Target, Reason, Host string
	Minor, Status                int
	Fields                       []string
	ContentLength                int64
	Chunked, Close, Upgrade      bool
	Expect100                    bool
}

func summarize(h *Head) summary {
	s := summary{
		Method: string(h.Method), Target: string(h.Target), Reason: string(h.Reason),
		Host: string(h.Host), Minor: h.Minor, Status: h.Status,
		ContentLength: h.ContentLength, Chunked: h.Chunked, Close: h.Close,
		Upgrade: h.Upgrade, Expect100: h.Expect100,
	}
	for _, f := range h.Fields {
		s.Fields = append(s.Fields, string(f.Name)+"="+string(f.Value))
	}
	return s
}

func TestParseRequestAccepts(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want summary
	}{{
		name: "get",
		in:   "GET /greet?x=1 HTTP/1.1\nHost: greeter\n\n",
		want: summary{Method: "GET", Target: "/greet?x=1", Host: "greeter", Minor: 1,
			Fields: []string{"Host=greeter"}, ContentLength: -1},
	}, {
		name: "value OWS trimmed, empty value",
		in:   "GET / HTTP/1.1\nHost:  \tg \t\nX-Empty:\nX-A:b\n\n",
		want: summary{Method: "GET", Target: "/", Host: "g", Minor: 1,
			Fields: []string{"Host=g", "X-Empty=", "X-A=b"}, ContentLength: -1},
	}, {
		name: "leading empty lines skipped",
		in:   "\n\nGET / HTTP/1.1\nHost: g\n\n",
		want: summary{Method: "GET", Target: "/", Host: "g", Minor: 1,
			Fields: []string{"Host=g"}, ContentLength: -1},
	}, {
		name: "content-length",
		in:   "POST /p HTTP/1.1\nhost: g\ncontent-length: 0042\n\n",
		want: summary{Method: "POST", Target: "/p", Host: "g", Minor: 1,
			Fields: []string{"host=g", "content-length=0042"}, ContentLength: 42},
	}, {
		name: "identical content-length repeated",
		in:   "POST /p HTTP/1.1\nHost: g\nContent-Length: 5\nContent-Length:  5\n\n",
		want: summary{Method: "POST", Target: "/p", Host: "g", Minor: 1,
			Fields: []string{"Host=g", "Content-Length=5", "Content-Length=5"}, ContentLength: 5},
	}, {
		name: "max content-length",
		in:   "POST /p HTTP/1.1\nHost: g\nContent-Length: 9223372036854775807\n\n",
		want: summary{Method: "POST", Target: "/p", Host: "g", Minor: 1,
			Fields: []string{"Host=g", "Content-Length=9223372036854775807"}, ContentLength: 1<<63 - 1},
	}, {
		name: "chunked, any case",
		in:   "POST /p HTTP/1.1\nHost: g\nTransfer-Encoding: Chunked\nTrailer: X-Sum\n\n",
		want: summary{Method: "POST", Target: "/p", Host: "g", Minor: 1,
			Fields: []string{"Host=g", "Transfer-Encoding=Chunked", "Trailer=X-Sum"}, ContentLength: -1, Chunked: true},
	}, {
		name: "connection close",
		in:   "GET / HTTP/1.1\nHost: g\nConnection: foo, CLOSE\n\n",
		want: summary{Method: "GET", Target: "/", Host: "g", Minor: 1,
			Fields: []string{"Host=g", "Connection=foo, CLOSE"}, ContentLength: -1, Close: true},
	}, {
		name: "http/1.0 closes by default, no Host needed",
		in:   "GET / HTTP/1.0\n\n",
		want: summary{Method: "GET", Target: "/", ContentLength: -1, Close: true},
	}, {
		name: "http/1.0 keep-alive",
		in:   "GET / HTTP/1.0\nConnection: Keep-Alive\n\n",
		want: summary{Method: "GET", Target: "/", Fields: []string{"Connection=Keep-Alive"}, ContentLength: -1},
	}, {
		name: "upgrade",
		in:   "GET /ws HTTP/1.1\nHost: g\nConnection: keep-alive, Upgrade\nUpgrade: websocket\n\n",
		want: summary{Method: "GET", Target: "/ws", Host: "g", Minor: 1,
			Fields: []string{"Host=g", "Connection=keep-alive, Upgrade", "Upgrade=websocket"}, ContentLength: -1, Upgrade: true},
	}, {
		name: "upgrade header without connection token",
		in:   "GET /ws HTTP/1.1\nHost: g\nUpgrade: websocket\n\n",
		want: summary{Method: "GET", Target: "/ws", Host: "g", Minor: 1,
			Fields: []string{"Host=g", "Upgrade=websocket"}, ContentLength: -1},
	}, {
		name: "expect 100-continue",
		in:   "PUT /p HTTP/1.1\nHost: g\nExpect: 100-Continue\nContent-Length: 1\n\n",
		want: summary{Method: "PUT", Target: "/p", Host: "g", Minor: 1,
			Fields: []string{"Host=g", "Expect=100-Continue", "Content-Length=1"}, ContentLength: 1, Expect100: true},
	}, {
		name: "absolute-form",
		in:   "GET http://user-svc.ns:8080/a/b?c HTTP/1.1\nHost: x\n\n",
		want: summary{Method: "GET", Target: "http://user-svc.ns:8080/a/b?c", Host: "x", Minor: 1,
			Fields: []string{"Host=x"}, ContentLength: -1},
	}, {
		name: "absolute-form IPv6",
		in:   "GET http://[::1]:80?q HTTP/1.1\nHost: [::1]:80\n\n",
		want: summary{Method: "GET", Target: "http://[::1]:80?q", Host: "[::1]:80", Minor: 1,
			Fields: []string{"Host=[::1]:80"}, ContentLength: -1},
	}, {
		name: "authority-form",
		in:   "CONNECT db.ns:5432 HTTP/1.1\nHost: db.ns:5432\n\n",
		want: summary{Method: "CONNECT", Target: "db.ns:5432", Host: "db.ns:5432", Minor: 1,
			Fields: []string{"Host=db.ns:5432"}, ContentLength: -1},
	}, {
		name: "asterisk-form",
		in:   "OPTIONS * HTTP/1.1\nHost: g\n\n",
		want: summary{Method: "OPTIONS", Target: "*", Host: "g", Minor: 1,
			Fields: []string{"Host=g"}, ContentLength: -1},
	}, {
		name: "percent-encoding, obs-text in path and value",
		in:   "GET /%C3%A9t\xc3\xa9?%zz HTTP/1.1\nHost: g\nX: caf\xc3\xa9\n\n",
		want: summary{Method: "GET", Target: "/%C3%A9t\xc3\xa9?%zz", Host: "g", Minor: 1,
			Fields: []string{"Host=g", "X=caf\xc3\xa9"}, ContentLength: -1},
	}, {
		name: "extension method, token field names",
		in:   "M-SEARCH / HTTP/1.1\nHost: g\nX!#$%&'*+-.^_`|~9: v\n\n",
		want: summary{Method: "M-SEARCH", Target: "/", Host: "g", Minor: 1,
			Fields: []string{"Host=g", "X!#$%&'*+-.^_`|~9=v"}, ContentLength: -1},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := append(crlf(tt.in), "BODY"...)
			var h Head
			n, err := h.ParseRequest(in)
			if err != nil {
				t.Fatalf("ParseRequest: got error %v, want nil", err)
			}
			if want := len(in) - len("BODY"); n != want {
				t.Errorf("got n %d, want %d", n, want)
			}
			if diff := cmp.Diff(tt.want, summarize(&h)); diff != "" {
				t.Errorf("head (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseRequestRefuses(t *testing.T) {
	many := "GET / HTTP/1.1\nHost: g\n" + strings.Repeat("X: y\n", MaxHeaders) + "\n"
	tests := []struct {
		name string
		in   string // "\n" is CRLF; a bare LF is written {LF}
		want error
	}{
		{"bare LF ending a field line", "GET / HTTP/1.1\nHost: g{LF}\n", errBareLF},
		{"bare LF ending the request line", "GET / HTTP/1.1{LF}Host: g\n\n", errBareLF},
		{"bare LF ending the head", "GET / HTTP/1.1\nHost: g\n{LF}", errBareLF},
		{"bare LF before the request line", "{LF}GET / HTTP/1.1\nHost: g\n\n", errBareLF},
		{"bare CR in a value", "GET / HTTP/1.1\nHost: g\nX: a\rb\n\n", errBareCR},
		{"bare CR as a line", "GET / HTTP/1.1\nHost: g\n\r\n\n", errBareCR},
		{"bare CR in the request line", "GET /\r HTTP/1.1\nHost: g\n\n", errBareCR},
		{"obs-fold", "GET / HTTP/1.1\nHost: g\nX: a\n b\n\n", errObsFold},
		{"obs-fold with HTAB", "GET / HTTP/1.1\nHost: g\nX: a\n\tb\n\n", errObsFold},
		{"whitespace before the first field", "GET / HTTP/1.1\n Host: g\n\n", errObsFold},
		{"space before colon", "GET / HTTP/1.1\nHost : g\n\n", errSpaceBeforeColon},
		{"tab before colon", "GET / HTTP/1.1\nHost: g\nContent-Length\t: 1\n\n", errSpaceBeforeColon},
		{"empty field name", "GET / HTTP/1.1\nHost: g\n: v\n\n", errEmptyName},
		{"field name not a token", "GET / HTTP/1.1\nHost: g\nX(y): v\n\n", errFieldName},
		{"field name with space inside", "GET / HTTP/1.1\nHost: g\nX Y: v\n\n", errFieldName},
		{"no colon", "GET / HTTP/1.1\nHost: g\nX\n\n", errFieldName},
		{"NUL in value", "GET / HTTP/1.1\nHost: g\nX: a\x00b\n\n", errFieldValue},
		{"DEL in value", "GET / HTTP/1.1\nHost: g\nX: a\x7fb\n\n", errFieldValue},
		{"control in value", "GET / HTTP/1.1\nHost: g\nX: a\x01b\n\n", errFieldValue},
		{"CL and TE", "POST / HTTP/1.1\nHost: g\nContent-Length: 3\nTransfer-Encoding: chunked\n\n", errCLAndTE},
		{"TE and CL", "POST / HTTP/1.1\nHost: g\nTransfer-Encoding: chunked\nContent-Length: 3\n\n", errCLAndTE},
		{"differing CL fields", "POST / HTTP/1.1\nHost: g\nContent-Length: 3\nContent-Length: 4\n\n", errCLMismatch},
		{"same CL spelled differently", "POST / HTTP/1.1\nHost: g\nContent-Length: 3\nContent-Length: 03\n\n", errCLMismatch},
		{"CL list", "POST / HTTP/1.1\nHost: g\nContent-Length: 3, 3\n\n", errContentLength},
		{"CL list differing", "POST / HTTP/1.1\nHost: g\nContent-Length: 3, 4\n\n", errContentLength},
		{"CL signed", "POST / HTTP/1.1\nHost: g\nContent-Length: +3\n\n", errContentLength},
		{"CL negative", "POST / HTTP/1.1\nHost: g\nContent-Length: -1\n\n", errContentLength},
		{"CL hex", "POST / HTTP/1.1\nHost: g\nContent-Length: 0x3\n\n", errContentLength},
		{"CL empty", "POST / HTTP/1.1\nHost: g\nContent-Length: \n\n", errContentLength},
		{"CL overflow", "POST / HTTP/1.1\nHost: g\nContent-Length: 9223372036854775808\n\n", errContentLength},
		{"TE gzip, chunked", "POST / HTTP/1.1\nHost: g\nTransfer-Encoding: gzip, chunked\n\n", ErrTransferEncoding},
		{"TE identity", "POST / HTTP/1.1\nHost: g\nTransfer-Encoding: identity\n\n", ErrTransferEncoding},
		{"TE chunked, chunked", "POST / HTTP/1.1\nHost: g\nTransfer-Encoding: chunked, chunked\n\n", ErrTransferEncoding},
		{"TE twice", "POST / HTTP/1.1\nHost: g\nTransfer-Encoding: chunked\nTransfer-Encoding: chunked\n\n", ErrTransferEncoding},
		{"TE chunked with parameter", "POST / HTTP/1.1\nHost: g\nTransfer-Encoding: chunked;q=1\n\n", ErrTransferEncoding},
		{"TE empty", "POST / HTTP/1.1\nHost: g\nTransfer-Encoding:\n\n", ErrTransferEncoding},
		{"TE in HTTP/1.0", "POST / HTTP/1.0\nTransfer-Encoding: chunked\n\n", errTE10},
		{"trailer naming content-length", "POST / HTTP/1.1\nHost: g\nTransfer-Encoding: chunked\nTrailer: a, content-length\n\n", errTrailerField},
		{"missing Host", "GET / HTTP/1.1\nX: y\n\n", errMissingHost},
		{"missing Host, CONNECT", "CONNECT g:443 HTTP/1.1\n\n", errMissingHost},
		{"two Hosts", "GET / HTTP/1.1\nHost: g\nhost: g\n\n", errDuplicateHost},
		{"two Hosts in HTTP/1.0", "GET / HTTP/1.0\nHost: g\nHost: h\n\n", errDuplicateHost},
		{"bad Host", "GET / HTTP/1.1\nHost: g/h\n\n", errHost},
		{"method not a token", "G(T / HTTP/1.1\nHost: g\n\n", errMethod},
		{"empty method", " / HTTP/1.1\nHost: g\n\n", errMethod},
		{"no target", "GET HTTP/1.1\nHost: g\n\n", errRequestLine},
		{"double space", "GET  / HTTP/1.1\nHost: g\n\n", errVersion},
		{"space in target", "GET /a b HTTP/1.1\nHost: g\n\n", errVersion},
		{"trailing space", "GET / HTTP/1.1 \nHost: g\n\n", errVersion},
		{"tab separator", "GET\t/ HTTP/1.1\nHost: g\n\n", errMethod},
		{"HTTP/1.2", "GET / HTTP/1.2\nHost: g\n\n", errVersion},
		{"HTTP/2.0", "PRI * HTTP/2.0\n\n", errVersion},
		{"HTTP/0.9", "GET /\n\n", errRequestLine},
		{"lowercase version", "GET / http/1.1\nHost: g\n\n", errVersion},
		{"control in target", "GET /\x01 HTTP/1.1\nHost: g\n\n", errTarget},
		{"DEL in target", "GET /\x7f HTTP/1.1\nHost: g\n\n", errTarget},
		{"fragment", "GET /a#b HTTP/1.1\nHost: g\n\n", errTarget},
		{"bad percent-encoding", "GET /a%zz HTTP/1.1\nHost: g\n\n", errTarget},
		{"truncated percent-encoding", "GET /a%4 HTTP/1.1\nHost: g\n\n", errTarget},
		{"relative target", "GET a/b HTTP/1.1\nHost: g\n\n", errTarget},
		{"asterisk outside OPTIONS", "GET * HTTP/1.1\nHost: g\n\n", errAsterisk},
		{"userinfo", "GET http://u:p@g/ HTTP/1.1\nHost: g\n\n", errUserinfo},
		{"empty host", "GET http:///a HTTP/1.1\nHost: g\n\n", errTarget},
		{"bad port", "GET http://g:8x/ HTTP/1.1\nHost: g\n\n", errTarget},
		{"bad IPv6", "GET http://[::1::]/ HTTP/1.1\nHost: g\n\n", errTarget},
		{"IPv4 in brackets", "GET http://[1.2.3.4]/ HTTP/1.1\nHost: g\n\n", errTarget},
		{"IPv6 zone", "GET http://[fe80::1%25en0]/ HTTP/1.1\nHost: g\n\n", errTarget},
		{"CONNECT without port", "CONNECT g HTTP/1.1\nHost: g\n\n", errTarget},
		{"CONNECT empty port", "CONNECT g: HTTP/1.1\nHost: g\n\n", errTarget},
		{"CONNECT origin-form", "CONNECT /rpc HTTP/1.1\nHost: g\n\n", errTarget},
		{"too many fields", many, ErrTooManyHeaders},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var h Head
			n, err := h.ParseRequest(crlf(tt.in))
			if !errors.Is(err, tt.want) {
				t.Fatalf("ParseRequest: got (%d, %v), want error %v", n, err, tt.want)
			}
			if !errors.Is(tt.want, ErrTooManyHeaders) && !errors.Is(err, ErrMalformed) {
				t.Errorf("got error %v, want it to wrap ErrMalformed", err)
			}
		})
	}
}

func TestParseRequestMaxHeaders(t *testing.T) {
	in := crlf("GET / HTTP/1.1\nHost: g\n" + strings.Repeat("X: y\n", MaxHeaders-1) + "\n")
	var h Head
	if _, err := h.ParseRequest(in); err != nil {
		t.Fatalf("ParseRequest with %d fields: got error %v, want nil", MaxHeaders, err)
	}
}

func TestParseRequestIncomplete(t *testing.T) {
	in := crlf("\nPOST /p HTTP/1.1\nHost: g\nContent-Length: 1\n\n")
	for i := range len(in) {
		var h Head
		if n, err := h.ParseRequest(in[:i]); !errors.Is(err, ErrIncomplete) {
			t.Errorf("ParseRequest(%q): got (%d, %v), want ErrIncomplete", in[:i], n, err)
		}
	}
	// A malformed complete line is refused at once, not waited on.
	var h Head
	if _, err := h.ParseRequest(crlf("GET / HTTP/1.1\nHost : g\nX: y")); !errors.Is(err, errSpaceBeforeColon) {
		t.Errorf("got error %v, want %v", err, errSpaceBeforeColon)
	}
}

func TestParseRequestReusesHead(t *testing.T) {
	var h Head
	if _, err := h.ParseRequest(crlf("POST /a HTTP/1.1\nHost: a\nContent-Length: 1\nConnection: close, upgrade\nUpgrade: x\nExpect: 100-continue\n\n")); err != nil {
		t.Fatal(err)
	}
	if _, err := h.ParseRequest(crlf("GET /b HTTP/1.1\nHost: b\n\n")); err != nil {
		t.Fatal(err)
	}
	want := summary{Method: "GET", Target: "/b", Host: "b", Minor: 1, Fields: []string{"Host=b"}, ContentLength: -1}
	if diff := cmp.Diff(want, summarize(&h)); diff != "" {
		t.Errorf("second head (-want +got):\n%s", diff)
	}
}

func TestParseResponse(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    summary
		wantErr error
	}{{
		name: "ok",
		in:   "HTTP/1.1 200 OK\nContent-Length: 2\n\n",
		want: summary{Status: 200, Reason: "OK", Minor: 1, Fields: []string{"Content-Length=2"}, ContentLength: 2},
	}, {
		name: "empty reason",
		in:   "HTTP/1.1 204 \n\n",
		want: summary{Status: 204, Minor: 1, ContentLength: -1},
	}, {
		name: "no reason",
		in:   "HTTP/1.0 404\n\n",
		want: summary{Status: 404, ContentLength: -1, Close: true},
	}, {
		name: "reason with spaces and obs-text",
		in:   "HTTP/1.1 599 Very \tBad\xff\nTransfer-Encoding: chunked\nHost: a\nHost: b\nExpect: 100-continue\n\n",
		want: summary{Status: 599, Reason: "Very \tBad\xff", Minor: 1, Chunked: true, ContentLength: -1,
			Fields: []string{"Transfer-Encoding=chunked", "Host=a", "Host=b", "Expect=100-continue"}},
	}, {
		name: "switching protocols",
		in:   "HTTP/1.1 101 Switching Protocols\nConnection: Upgrade\nUpgrade: websocket\n\n",
		want: summary{Status: 101, Reason: "Switching Protocols", Minor: 1, Upgrade: true, ContentLength: -1,
			Fields: []string{"Connection=Upgrade", "Upgrade=websocket"}},
	},
		{name: "status 099", in: "HTTP/1.1 099 X\n\n", wantErr: errStatusLine},
		{name: "two-digit status", in: "HTTP/1.1 20 OK\n\n", wantErr: errStatusLine},
		{name: "four-digit status", in: "HTTP/1.1 2000 OK\n\n", wantErr: errStatusLine},
		{name: "signed status", in: "HTTP/1.1 +20 OK\n\n", wantErr: errStatusLine},
		{name: "two spaces", in: "HTTP/1.1  200 OK\n\n", wantErr: errStatusLine},
		{name: "control in reason", in: "HTTP/1.1 200 O\x00K\n\n", wantErr: errStatusLine},
		{name: "bad version", in: "HTTP/2.0 200 OK\n\n", wantErr: errVersion},
		{name: "no status", in: "HTTP/1.1\n\n", wantErr: errStatusLine},
		{name: "leading empty line", in: "\nHTTP/1.1 200 OK\n\n", wantErr: errStatusLine},
		{name: "CL and TE", in: "HTTP/1.1 200 OK\nContent-Length: 1\nTransfer-Encoding: chunked\n\n", wantErr: errCLAndTE},
		{name: "TE gzip", in: "HTTP/1.1 200 OK\nTransfer-Encoding: gzip\n\n", wantErr: ErrTransferEncoding},
		{name: "TE in HTTP/1.0", in: "HTTP/1.0 200 OK\nTransfer-Encoding: chunked\n\n", wantErr: errTE10},
		{name: "differing CL", in: "HTTP/1.1 200 OK\nContent-Length: 1\nContent-Length: 2\n\n", wantErr: errCLMismatch},
		{name: "obs-fold", in: "HTTP/1.1 200 OK\nX: a\n b\n\n", wantErr: errObsFold},
		{name: "bare LF", in: "HTTP/1.1 200 OK{LF}\n", wantErr: errBareLF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := crlf(tt.in)
			var h Head
			n, err := h.ParseResponse(in)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) || !errors.Is(err, ErrMalformed) {
					t.Fatalf("ParseResponse: got (%d, %v), want error %v", n, err, tt.wantErr)
				}
				return
			}
			if err != nil || n != len(in) {
				t.Fatalf("ParseResponse: got (%d, %v), want (%d, nil)", n, err, len(in))
			}
			if diff := cmp.Diff(tt.want, summarize(&h)); diff != "" {
				t.Errorf("head (-want +got):\n%s", diff)
			}
		})
	}
}

func TestFieldLookups(t *testing.T) {
	var h Head
	in := crlf("GET / HTTP/1.1\nHost: g\nConnection: keep-alive , X-Hop,,\nconnection: Upgrade\n" +
		"X-Hop: 1\nX-End: 2\nKeep-Alive: 5\nProxy-Connection: x\nTE: trailers\nTrailer: X\n" +
		"Transfer-Encoding: chunked\nUpgrade: h2c\nProxy-Authorization: b\nProxy-Authenticate: c\nX-End: 3\n\n")
	if _, err := h.ParseRequest(in); err != nil {
		t.Fatal(err)
	}
	t.Run("Get", func(t *testing.T) {
		for name, want := range map[string]string{"x-end": "2", "HOST": "g", "Connection": "keep-alive , X-Hop,,"} {
			if got := string(h.Get(name)); got != want {
				t.Errorf("Get(%q): got %q, want %q", name, got, want)
			}
		}
		if got := h.Get("X-Missing"); got != nil {
			t.Errorf("Get(X-Missing): got %q, want nil", got)
		}
	})
	t.Run("HasToken", func(t *testing.T) {
		for _, tt := range []struct {
			name, tok string
			want      bool
		}{
			{"Connection", "keep-alive", true},
			{"connection", "x-hop", true},
			{"Connection", "upgrade", true}, // in the second Connection field
			{"Connection", "close", false},
			{"Connection", "keep", false},
			{"Connection", "", false},
			{"Upgrade", "H2C", true},
			{"X-End", "3", true},
		} {
			if got := h.HasToken(tt.name, tt.tok); got != tt.want {
				t.Errorf("HasToken(%q, %q): got %v, want %v", tt.name, tt.tok, got, tt.want)
			}
		}
	})
	t.Run("IsHopByHop", func(t *testing.T) {
		var got []string
		for _, f := range h.Fields {
			if h.IsHopByHop(f) {
				got = append(got, string(f.Name))
			}
		}
		want := []string{"Connection", "connection", "X-Hop", "Keep-Alive", "Proxy-Connection",
			"TE", "Trailer", "Transfer-Encoding", "Upgrade"}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("hop-by-hop fields (-want +got):\n%s", diff)
		}
	})
}
