package wire

import (
	"bufio"
	"bytes"
	"net/http"
	"strings"
	"testing"
)

// typicalRequest is a request head with 8 fields, as a browser or a mesh
// client sends them.
var typicalRequest = []byte("GET /api/v1/users/42?fields=name,email HTTP/1.1\r\n" +
	"Host: users.default.svc.cluster.local:8080\r\n" +
	"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36\r\n" +
	"Accept: application/json, text/plain, */*\r\n" +
	"Accept-Encoding: gzip, deflate, br\r\n" +
	"Accept-Language: en-US,en;q=0.9\r\n" +
	"Connection: keep-alive\r\n" +
	"Traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n" +
	"Content-Length: 0\r\n" +
	"\r\n")

func BenchmarkParseRequest(b *testing.B) {
	var h Head
	b.ReportAllocs()
	b.SetBytes(int64(len(typicalRequest)))
	for b.Loop() {
		if _, err := h.ParseRequest(typicalRequest); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkNetHTTPReadRequest is the yardstick: net/http reading the same
// head.
func BenchmarkNetHTTPReadRequest(b *testing.B) {
	r := bytes.NewReader(typicalRequest)
	br := bufio.NewReader(r)
	b.ReportAllocs()
	b.SetBytes(int64(len(typicalRequest)))
	for b.Loop() {
		r.Reset(typicalRequest)
		br.Reset(r)
		if _, err := http.ReadRequest(br); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkChunkedScan(b *testing.B) {
	var body strings.Builder
	for range 16 {
		body.WriteString("400;ext=1\r\n" + strings.Repeat("x", 0x400) + "\r\n")
	}
	body.WriteString("0\r\nX-Checksum: abc\r\n\r\n")
	in := []byte(body.String())
	var c Chunked
	b.ReportAllocs()
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		c.Reset()
		if _, done, err := c.Scan(in); !done || err != nil {
			b.Fatal(done, err)
		}
	}
}

func TestParseRequestAllocs(t *testing.T) {
	var h Head
	if _, err := h.ParseRequest(typicalRequest); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(100, func() { _, _ = h.ParseRequest(typicalRequest) }); n != 0 {
		t.Errorf("ParseRequest: got %v allocs/op, want 0", n)
	}
}
