package wire

import (
	"errors"
	"strings"
	"testing"
)

// scanWhole feeds b to a fresh Chunked in one piece.
func scanWhole(b []byte) (int, bool, error) {
	var c Chunked
	return c.Scan(b)
}

// scanSplit feeds b to a fresh Chunked in pieces cut at the given offsets,
// as Scan's caller would: what a piece leaves unconsumed after done is not
// the body's.
func scanSplit(b []byte, cuts ...int) (int, bool, error) {
	var c Chunked
	total, prev := 0, 0
	for _, cut := range append(cuts, len(b)) {
		n, done, err := c.Scan(b[prev:cut])
		total += n
		if err != nil || done {
			return total, done, err
		}
		if n != cut-prev {
			return total, done, errors.New("Scan stopped early without done or error")
		}
		prev = cut
	}
	return total, false, nil
}

var chunkedAccepts = []struct{ name, body string }{
	{"empty body", "0\r\n\r\n"},
	{"one chunk", "5\r\nhello\r\n0\r\n\r\n"},
	{"chunks, hex sizes", "a\r\n0123456789\r\nA\r\n0123456789\r\n1\r\n\n\r\n0\r\n\r\n"},
	{"data holding CRLF and 0", "7\r\n0\r\n\r\n\r\n\r\n0\r\n\r\n"},
	{"leading zeros", "0005\r\nhello\r\n000\r\n\r\n"},
	{"extensions", "5;name=value;quoted=\"a \\\" ;b\"\r\nhello\r\n0;last\r\n\r\n"},
	{"extension with BWS after ;", "5; a = b\r\nhello\r\n0\r\n\r\n"},
	{"trailers", "5\r\nhello\r\n0\r\nX-Sum: 1\r\nx-empty:\r\nX-O: caf\xc3\xa9\t\r\n\r\n"},
	{"max chunk size", "4000000000000000\r\n"}, // incomplete, but accepted so far
}

func TestChunkedAccepts(t *testing.T) {
	for _, tt := range chunkedAccepts {
		t.Run(tt.name, func(t *testing.T) {
			body := []byte(tt.body)
			complete := strings.HasSuffix(tt.body, "\r\n\r\n")
			in := append(body, "GET / HTTP/1.1\r\n"...)
			n, done, err := scanWhole(in)
			switch {
			case err != nil:
				t.Fatalf("Scan: got error %v, want nil", err)
			case complete && (!done || n != len(body)):
				t.Fatalf("Scan: got (%d, %v), want (%d, true)", n, done, len(body))
			case !complete && (done || n != len(in)):
				t.Fatalf("Scan of an incomplete body: got (%d, %v), want (%d, false)", n, done, len(in))
			}
			for cut := range len(in) {
				if n2, done2, err2 := scanSplit(in, cut); n2 != n || done2 != done || err2 != nil {
					t.Fatalf("split at %d: got (%d, %v, %v), want (%d, %v, nil)", cut, n2, done2, err2, n, done)
				}
			}
			every := make([]int, len(in))
			for i := range every {
				every[i] = i
			}
			if n2, done2, err2 := scanSplit(in, every...); n2 != n || done2 != done || err2 != nil {
				t.Fatalf("byte by byte: got (%d, %v, %v), want (%d, %v, nil)", n2, done2, err2, n, done)
			}
		})
	}
}

func TestChunkedRefuses(t *testing.T) {
	tests := []struct {
		name, body string
		want       error
	}{
		{"empty size", "\r\nhello\r\n0\r\n\r\n", errChunkSize},
		{"bad hex", "5g\r\nhello\r\n0\r\n\r\n", errChunkSize},
		{"signed size", "+5\r\nhello\r\n0\r\n\r\n", errChunkSize},
		{"0x prefix", "0x5\r\nhello\r\n0\r\n\r\n", errChunkSize},
		{"whitespace after size", "5 \r\nhello\r\n0\r\n\r\n", errChunkSize},
		{"whitespace before ;", "5 ;a\r\nhello\r\n0\r\n\r\n", errChunkSize},
		{"whitespace before size", " 5\r\nhello\r\n0\r\n\r\n", errChunkSize},
		{"size over 2^62", "4000000000000001\r\n", errChunkTooLarge},
		{"size overflow", "10000000000000000\r\n", errChunkTooLarge},
		{"17 digits", "00000000000000005\r\nhello\r\n0\r\n\r\n", errChunkTooLarge},
		{"bare LF after size", "5\nhello\r\n0\r\n\r\n", errBareLF},
		{"bare CR after size", "5\rhello\r\n0\r\n\r\n", errBareCR},
		{"bare LF after extension", "5;a\nhello\r\n0\r\n\r\n", errBareLF},
		{"control in extension", "5;a\x01\r\nhello\r\n0\r\n\r\n", errChunkExt},
		{"NUL in extension", "5;\x00\r\nhello\r\n0\r\n\r\n", errChunkExt},
		{"CR in extension", "5;a\rb\r\nhello\r\n0\r\n\r\n", errBareCR},
		{"data too long", "5\r\nhello!\r\n0\r\n\r\n", errChunkDataEnd},
		{"bare LF after data", "5\r\nhello\n0\r\n\r\n", errChunkDataEnd},
		{"no CRLF after data", "5\r\nhello0\r\n\r\n", errChunkDataEnd},
		{"bare LF ending the body", "0\r\n\n", errBareLF},
		{"bare CR ending the body", "0\r\n\rX", errBareCR},
		{"trailer obs-fold", "0\r\nX: a\r\n b\r\n\r\n", errObsFold},
		{"trailer space before colon", "0\r\nX : a\r\n\r\n", errSpaceBeforeColon},
		{"trailer empty name", "0\r\n: a\r\n\r\n", errEmptyName},
		{"trailer name not a token", "0\r\nX(: a\r\n\r\n", errFieldName},
		{"trailer without colon", "0\r\nX\r\n\r\n", errFieldName},
		{"trailer control in value", "0\r\nX: a\x00\r\n\r\n", errFieldValue},
		{"trailer bare LF", "0\r\nX: a\n\r\n", errBareLF},
		{"trailer bare CR", "0\r\nX: a\rb\r\n\r\n", errBareCR},
		{"trailer too large", "0\r\nX: " + strings.Repeat("a", MaxTrailerBytes) + "\r\n\r\n", errTrailerTooLarge},
		{"size line too long", "5;" + strings.Repeat("a", MaxChunkLine) + "\r\nhello\r\n0\r\n\r\n", errChunkLine},
		{"too much non-data", strings.Repeat("1;"+strings.Repeat("e", 1000)+"\r\nx\r\n", 20), errChunkOverhead},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := []byte(tt.body)
			n, _, err := scanWhole(in)
			if !errors.Is(err, tt.want) || !errors.Is(err, ErrMalformed) {
				t.Fatalf("Scan: got (%d, %v), want error %v", n, err, tt.want)
			}
			step := 1 + len(in)/512 // every byte of the short ones
			for cut := 0; cut < len(in); cut += step {
				if n2, _, err2 := scanSplit(in, cut); n2 != n || !sameErr(err2, err) {
					t.Fatalf("split at %d: got (%d, %v), want (%d, %v)", cut, n2, err2, n, err)
				}
			}
		})
	}
}

func TestChunkedLimitsExact(t *testing.T) {
	line := "5;" + strings.Repeat("a", MaxChunkLine-2) + "\r\nhello\r\n0\r\n\r\n"
	if _, done, err := scanWhole([]byte(line)); !done || err != nil {
		t.Errorf("chunk-size line of MaxChunkLine bytes: got (%v, %v), want (true, nil)", done, err)
	}
	trailer := "0\r\nX: " + strings.Repeat("a", MaxTrailerBytes-len("X: \r\n\r\n")) + "\r\n\r\n"
	if _, done, err := scanWhole([]byte(trailer)); !done || err != nil {
		t.Errorf("trailer section of MaxTrailerBytes: got (%v, %v), want (true, nil)", done, err)
	}
}

func TestChunkedAfterEndAndReset(t *testing.T) {
	var c Chunked
	if _, done, err := c.Scan([]byte("0\r\n\r\n")); !done || err != nil {
		t.Fatalf("Scan: got (%v, %v), want (true, nil)", done, err)
	}
	if n, done, err := c.Scan([]byte("more")); n != 0 || !done || err != nil {
		t.Errorf("Scan after done: got (%d, %v, %v), want (0, true, nil)", n, done, err)
	}
	c.Reset()
	if _, _, err := c.Scan([]byte("x")); !errors.Is(err, errChunkSize) {
		t.Fatalf("Scan: got error %v, want %v", err, errChunkSize)
	}
	if n, _, err := c.Scan([]byte("0\r\n\r\n")); n != 0 || !errors.Is(err, errChunkSize) {
		t.Errorf("Scan after a refusal: got (%d, %v), want (0, %v)", n, err, errChunkSize)
	}
	c.Reset()
	if n, done, err := c.Scan([]byte("0\r\n\r\n")); n != 5 || !done || err != nil {
		t.Errorf("Scan after Reset: got (%d, %v, %v), want (5, true, nil)", n, done, err)
	}
}

// sameErr reports whether two results failed alike: both nil, or the same
// refusal.
func sameErr(a, b error) bool {
	if a == nil || b == nil {
		return (a == nil) == (b == nil)
	}
	return a.Error() == b.Error()
}
