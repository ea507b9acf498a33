package wire

import "bytes"

// Field is one header field, as sub-slices of the parsed buffer (no copy).
// Value has surrounding OWS trimmed.
type Field struct{ Name, Value []byte }

// Head is one parsed request or response head. Parse* reuse its slices
// (Fields[:0]) so a Head kept per connection allocates nothing in steady
// state. Its slices point into the parsed buffer: they are valid as long as
// that buffer is.
type Head struct {
	// Request line (ParseRequest): Method, Target (request-target as
	// sent), and the protocol minor version (0 or 1).
	Method, Target []byte
	Minor          int
	// Status line (ParseResponse): Status code (100-999) and Reason.
	Status int
	Reason []byte
	Fields []Field
	// Framing, derived while parsing (RFC 9112 §6):
	ContentLength int64  // -1 when absent
	Chunked       bool   // Transfer-Encoding whose final coding is chunked
	Close         bool   // "Connection: close", or HTTP/1.0 without "Connection: keep-alive"
	Upgrade       bool   // a Connection header naming "upgrade" and an Upgrade header present
	Expect100     bool   // request: "Expect: 100-continue"
	Host          []byte // request: the Host field value (nil if absent)
}

// ParseRequest parses a request head at the start of b:
//
//	HTTP-message = start-line CRLF *( field-line CRLF ) CRLF (RFC 9112 §2.1)
//
// It returns n, the length of the head including its final CRLF CRLF, or
// ErrIncomplete when b does not hold a whole head yet and nothing in its
// complete lines is wrong. Leading empty lines are skipped and counted in n
// (RFC 9112 §2.2). Lines must end in CRLF: a bare LF is refused.
func (h *Head) ParseRequest(b []byte) (n int, err error) {
	h.reset()
	off := 0
	var line []byte
	for {
		if line, n, err = nextLine(b, off); err != nil {
			return 0, err
		}
		if len(line) > 0 {
			break
		}
		off = n // an empty line before the request line (RFC 9112 §2.2)
	}
	if err := h.requestLine(line); err != nil {
		return 0, err
	}
	fr := framing{request: true}
	if n, err = h.fieldSection(b, n, &fr); err != nil {
		return 0, err
	}
	if err := h.frame(&fr); err != nil {
		return 0, err
	}
	return n, nil
}

// ParseResponse parses a response head at the start of b, as ParseRequest
// does a request head (no empty lines may precede it). Whether the response
// has a body (it answers HEAD, or is 1xx, 204 or 304) is the caller's to
// decide: ContentLength and Chunked say what the head declares.
func (h *Head) ParseResponse(b []byte) (n int, err error) {
	h.reset()
	line, n, err := nextLine(b, 0)
	if err != nil {
		return 0, err
	}
	if err := h.statusLine(line); err != nil {
		return 0, err
	}
	var fr framing
	if n, err = h.fieldSection(b, n, &fr); err != nil {
		return 0, err
	}
	if err := h.frame(&fr); err != nil {
		return 0, err
	}
	return n, nil
}

func (h *Head) reset() { *h = Head{Fields: h.Fields[:0], ContentLength: -1} }

// nextLine returns the line starting at b[off] without its CRLF, and the
// offset just past it. A line ends in CRLF (RFC 9112 §2.2): a bare LF is
// refused, and so is a CR anywhere else in the line.
func nextLine(b []byte, off int) (line []byte, next int, err error) {
	i := bytes.IndexByte(b[off:], '\n')
	if i < 0 {
		return nil, 0, ErrIncomplete
	}
	end := off + i
	if i == 0 || b[end-1] != '\r' {
		return nil, 0, errBareLF
	}
	line = b[off : end-1]
	if bytes.IndexByte(line, '\r') >= 0 {
		return nil, 0, errBareCR
	}
	return line, end + 1, nil
}

// requestLine parses
//
//	request-line = method SP request-target SP HTTP-version (RFC 9112 §3)
//	method       = token (RFC 9110 §9.1)
func (h *Head) requestLine(line []byte) error {
	sp := bytes.IndexByte(line, ' ')
	if sp < 0 {
		return errRequestLine
	}
	method, rest := line[:sp], line[sp+1:]
	if !token(method) {
		return errMethod
	}
	sp = bytes.IndexByte(rest, ' ')
	if sp < 0 {
		return errRequestLine
	}
	target, version := rest[:sp], rest[sp+1:]
	minor, ok := httpVersion(version)
	if !ok {
		return errVersion
	}
	if err := requestTarget(method, target); err != nil {
		return err
	}
	h.Method, h.Target, h.Minor = method, target, minor
	return nil
}

// httpVersion parses HTTP-version = HTTP-name "/" DIGIT "." DIGIT (RFC 9112
// §2.3), of which only HTTP/1.0 and HTTP/1.1 are accepted, returning the
// minor version.
func httpVersion(v []byte) (minor int, ok bool) {
	if len(v) != len("HTTP/1.1") || string(v[:len("HTTP/1.")]) != "HTTP/1." {
		return 0, false
	}
	switch v[7] {
	case '0':
		return 0, true
	case '1':
		return 1, true
	}
	return 0, false
}

// statusLine parses
//
//	status-line = HTTP-version SP status-code SP [ reason-phrase ] (RFC 9112 §4)
//	status-code = 3DIGIT
//	reason-phrase = 1*( HTAB / SP / VCHAR / obs-text )
//
// A missing SP after status-code is accepted, as net/http does. The status
// code is 100-999 (RFC 9110 §15).
func (h *Head) statusLine(line []byte) error {
	const codeEnd = len("HTTP/1.1 200")
	if len(line) < codeEnd || line[len("HTTP/1.1")] != ' ' {
		return errStatusLine
	}
	minor, ok := httpVersion(line[:len("HTTP/1.1")])
	if !ok {
		return errVersion
	}
	code := line[len("HTTP/1.1 "):codeEnd]
	if code[0] < '1' || code[0] > '9' || !isDigit(code[1]) || !isDigit(code[2]) {
		return errStatusLine
	}
	var reason []byte
	if len(line) > codeEnd {
		if line[codeEnd] != ' ' {
			return errStatusLine
		}
		reason = line[codeEnd+1:]
		if !all(reason, cValue) {
			return errStatusLine
		}
	}
	h.Minor = minor
	h.Status = int(code[0]-'0')*100 + int(code[1]-'0')*10 + int(code[2]-'0')
	h.Reason = reason
	return nil
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// framing gathers what the fields of a head say about its framing and its
// connection (RFC 9112 §6, §9.3), for frame to check once all are read.
type framing struct {
	request        bool
	contentLength  []byte // the first Content-Length value
	transferCoding int    // Transfer-Encoding fields seen
	hosts          int
	connClose      bool
	connKeepAlive  bool
	connUpgrade    bool
	upgrade        bool
	trailer        bool // a Trailer field seen
}

// note records what field f, just parsed, says about framing.
func (fr *framing) note(h *Head, f Field) error {
	switch len(f.Name) {
	case len("Host"):
		if fr.request && equalFold(f.Name, "Host") {
			return fr.host(h, f.Value)
		}
	case len("Expect"):
		if fr.request && equalFold(f.Name, "Expect") && equalFold(f.Value, "100-continue") {
			h.Expect100 = true
		}
	case len("Upgrade"): // and len("Trailer")
		if equalFold(f.Name, "Upgrade") {
			fr.upgrade = true
		} else if equalFold(f.Name, "Trailer") {
			fr.trailer = true
		}
	case len("Connection"):
		if equalFold(f.Name, "Connection") {
			fr.connection(f.Value)
		}
	case len("Content-Length"):
		if equalFold(f.Name, "Content-Length") {
			return fr.contentLengthField(h, f.Value)
		}
	case len("Transfer-Encoding"):
		if equalFold(f.Name, "Transfer-Encoding") {
			return fr.transferEncoding(h, f.Value)
		}
	}
	return nil
}

// host checks Host = uri-host [ ":" port ] (RFC 9110 §7.2) as loosely as
// net/http does (a byte set), and that there is only one (RFC 9112 §3.2).
func (fr *framing) host(h *Head, v []byte) error {
	fr.hosts++
	if fr.hosts > 1 {
		return errDuplicateHost
	}
	if !all(v, cHost) {
		return errHost
	}
	h.Host = v
	return nil
}

// connection notes the options of Connection = #connection-option (RFC 9110
// §7.6.1) that change how the connection is handled.
func (fr *framing) connection(v []byte) {
	for len(v) > 0 {
		var opt []byte
		opt, v = listElement(v)
		switch {
		case equalFold(opt, "close"):
			fr.connClose = true
		case equalFold(opt, "keep-alive"):
			fr.connKeepAlive = true
		case equalFold(opt, "upgrade"):
			fr.connUpgrade = true
		}
	}
}

// contentLengthField parses Content-Length = 1*DIGIT (RFC 9110 §8.6). A
// repeated field must repeat the first value exactly (net/http collapses
// such duplicates); a list ("5, 5") is refused, as net/http does.
func (fr *framing) contentLengthField(h *Head, v []byte) error {
	if fr.contentLength != nil {
		if !bytes.Equal(v, fr.contentLength) {
			return errCLMismatch
		}
		return nil
	}
	n, ok := decimal(v)
	if !ok {
		return errContentLength
	}
	fr.contentLength = v
	h.ContentLength = n
	return nil
}

// decimal parses 1*DIGIT into an int64, refusing overflow.
func decimal(v []byte) (int64, bool) {
	if len(v) == 0 {
		return 0, false
	}
	var n int64
	for _, c := range v {
		if !isDigit(c) {
			return 0, false
		}
		d := int64(c - '0')
		if n > (1<<63-1-d)/10 {
			return 0, false
		}
		n = n*10 + d
	}
	return n, true
}

// transferEncoding checks Transfer-Encoding = #transfer-coding (RFC 9112
// §6.1). Like net/http, which accepts nothing else in requests or responses,
// wire takes exactly one field whose value is the single coding "chunked".
// An HTTP/1.0 message has faulty framing if it has one (RFC 9112 §6.1).
func (fr *framing) transferEncoding(h *Head, v []byte) error {
	if h.Minor == 0 {
		return errTE10
	}
	fr.transferCoding++
	if fr.transferCoding > 1 || !equalFold(v, "chunked") {
		return ErrTransferEncoding
	}
	h.Chunked = true
	return nil
}

// frame applies the rules that need the whole field section: message body
// length (RFC 9112 §6.1, §6.3), Host (RFC 9112 §3.2), persistence (RFC 9112
// §9.3) and upgrade (RFC 9110 §7.8).
func (h *Head) frame(fr *framing) error {
	if fr.transferCoding > 0 && fr.contentLength != nil {
		return errCLAndTE // RFC 9112 §6.1: "ought to be handled as an error"
	}
	if h.Chunked && fr.trailer && h.trailerNamesFraming() {
		return errTrailerField
	}
	if fr.request && h.Minor == 1 && fr.hosts == 0 {
		return errMissingHost
	}
	h.Close = fr.connClose || h.Minor == 0 && !fr.connKeepAlive
	h.Upgrade = fr.connUpgrade && fr.upgrade
	return nil
}

// trailerNamesFraming reports whether a Trailer field (RFC 9110 §6.6.2)
// announces a field that must not be a trailer because it frames the
// message (RFC 9110 §6.5.1); net/http refuses such a chunked message.
func (h *Head) trailerNamesFraming() bool {
	return h.HasToken("Trailer", "Transfer-Encoding") ||
		h.HasToken("Trailer", "Content-Length") ||
		h.HasToken("Trailer", "Trailer")
}
