package proxy

import (
	"bufio"
	"net"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestClassify(t *testing.T) {
	tests := []struct {
		in   string
		want string
	}{
		{"GET / HTTP/1.1\r\n", detectHTTP},
		{"POST /x HTTP/1.1\r\n", detectHTTP},
		{"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", detectHTTP},
		{"PRI * HTTP/2", ""},
		{"GE", ""},
		{"\x16\x03\x01\x02\x00", detectTCP}, // TLS client hello
		{"\x00\x00\x00\x01", detectTCP},
		{"get / HTTP/1.1", detectTCP}, // methods are case-sensitive
		{"EHLO mail\r\n", detectTCP},
		{"GETX", detectTCP},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if got := classify([]byte(tt.in)); got != tt.want {
				t.Errorf("classify(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestSniffOverConnection(t *testing.T) {
	tests := []struct {
		name  string
		write []string // written in order, a pause between each
		want  string
	}{
		{"http in one write", []string{"GET / HTTP/1.1\r\nHost: x\r\n\r\n"}, detectHTTP},
		{"http split", []string{"PO", "ST / HTTP/1.1\r\n"}, detectHTTP},
		{"h2 preface split", []string{"PRI * HTTP/2.0\r\n", "\r\nSM\r\n\r\n"}, detectHTTP},
		{"client silent (server speaks first)", nil, detectTCP},
		{"binary", []string{"\x00\x01\x02"}, detectTCP},
		{"prefix then silence", []string{"GE"}, detectTCP},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client, server := net.Pipe()
			defer client.Close()
			defer server.Close()
			go func() {
				for _, w := range tt.write {
					client.Write([]byte(w))
				}
			}()
			br := bufio.NewReader(server)
			start := time.Now()
			got := sniff(server, br, 200*time.Millisecond)
			if got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("sniffing took %v, want it bounded by the timeout", d)
			}
			// What was read stays readable.
			if len(tt.write) > 0 && tt.want == detectHTTP {
				b, _ := br.Peek(len(tt.write[0]))
				if string(b) != tt.write[0] {
					t.Errorf("buffered %q, want %q kept for the handler", b, tt.write[0])
				}
			}
		})
	}
}

// FuzzClassify: no input may panic, and HTTP is only claimed for inputs
// that start like HTTP.
func FuzzClassify(f *testing.F) {
	for _, s := range []string{"GET /", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "\x16\x03", ""} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if classify(b) == detectHTTP && len(b) < 4 {
			t.Errorf("classify(%q) claimed HTTP from under 4 bytes", b)
		}
	})
}

// BenchmarkSniff measures protocol detection on a connection's first
// bytes: an HTTP/1.1 request line, the HTTP/2 preface and opaque bytes.
func BenchmarkSniff(b *testing.B) {
	for _, bc := range []struct {
		name  string
		first []byte
	}{
		{"http1", []byte("GET /greet HTTP/1.1\r\nHost: greeter\r\n\r\n")},
		{"h2", h2Preface},
		{"tcp", []byte("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")},
	} {
		b.Run(bc.name, func(b *testing.B) {
			client, server := net.Pipe()
			defer client.Close()
			defer server.Close()
			go func() {
				for {
					if _, err := client.Write(bc.first); err != nil {
						return
					}
				}
			}()
			br := bufio.NewReaderSize(server, 4096)
			b.ReportAllocs()
			for b.Loop() {
				sniff(server, br, time.Second)
				br.Discard(len(bc.first)) //nolint:errcheck // the writer keeps the buffer full
			}
		})
	}
}

// FuzzMeshALPN feeds the inbound side's mesh-TLS detection the first
// bytes of a connection (a raw ClientHello, or anything): it answers,
// never panics, and never takes more than the detection timeout.
func FuzzMeshALPN(f *testing.F) {
	f.Add([]byte{0x16, 0x03, 0x01, 0x00, 0x05, 0x01, 0x00, 0x00, 0x01, 0x00})
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Add([]byte{0x16, 0x03, 0x01, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		a, b := net.Pipe()
		defer a.Close()
		defer b.Close()
		go func() { b.Write(data); b.Close() }() //nolint:errcheck // the reader may stop early
		start := time.Now()
		meshALPN(a, bufio.NewReaderSize(a, 16<<10), 50*time.Millisecond)
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("detection took %v", d)
		}
	})
}
