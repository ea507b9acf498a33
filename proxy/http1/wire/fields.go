package wire

import "bytes"

// fieldSection parses the field lines after the start line, from b[off] up
// to and including the empty line that ends the head:
//
//	*( field-line CRLF ) CRLF (RFC 9112 §2.1)
//
// It returns the offset just past the head.
func (h *Head) fieldSection(b []byte, off int, fr *framing) (int, error) {
	for {
		line, next, err := nextLine(b, off)
		if err != nil {
			return 0, err
		}
		if len(line) == 0 {
			return next, nil
		}
		if len(h.Fields) == MaxHeaders {
			return 0, ErrTooManyHeaders
		}
		f, err := fieldLine(line)
		if err != nil {
			return 0, err
		}
		h.Fields = append(h.Fields, f)
		if err := fr.note(h, f); err != nil {
			return 0, err
		}
		off = next
	}
}

// fieldLine parses
//
//	field-line  = field-name ":" OWS field-value OWS (RFC 9112 §5)
//	field-name  = token (RFC 9110 §5.1)
//	field-value = *field-content (RFC 9110 §5.5)
//
// refusing obs-fold (RFC 9112 §5.2) and whitespace before the colon (RFC
// 9112 §5.1).
func fieldLine(line []byte) (Field, error) {
	if isOWS(line[0]) {
		return Field{}, errObsFold
	}
	colon := bytes.IndexByte(line, ':')
	if colon < 0 {
		return Field{}, errFieldName
	}
	name, value := line[:colon], trimOWS(line[colon+1:])
	if err := fieldName(name); err != nil {
		return Field{}, err
	}
	if !all(value, cValue) {
		return Field{}, errFieldValue
	}
	return Field{Name: name, Value: value}, nil
}

// fieldName checks field-name = token (RFC 9110 §5.1), naming the two ways
// a smuggler likes to get it wrong.
func fieldName(name []byte) error {
	switch {
	case len(name) == 0:
		return errEmptyName
	case isOWS(name[len(name)-1]):
		return errSpaceBeforeColon
	case !token(name):
		return errFieldName
	}
	return nil
}

// Get returns the value of the first field named name (ASCII
// case-insensitive), or nil.
func (h *Head) Get(name string) []byte {
	for _, f := range h.Fields {
		if equalFold(f.Name, name) {
			return f.Value
		}
	}
	return nil
}

// HasToken reports whether any field named name has the comma-separated
// token tok (case-insensitive), e.g. HasToken("Connection", "close").
func (h *Head) HasToken(name, tok string) bool { return hasToken(h, name, tok) }

func hasToken[S string | []byte](h *Head, name string, tok S) bool {
	for _, f := range h.Fields {
		if !equalFold(f.Name, name) {
			continue
		}
		for v := f.Value; len(v) > 0; {
			var t []byte
			if t, v = listElement(v); len(t) > 0 && equalFold(t, tok) {
				return true
			}
		}
	}
	return false
}

// hopByHop lists the fields a proxy must not forward (RFC 9110 §7.6.1):
// net/http/httputil's list without Proxy-Authenticate and
// Proxy-Authorization, which a transparent proxy passes end to end.
var hopByHop = [...]string{
	"Connection",
	"Keep-Alive",
	"Proxy-Connection",
	"TE",
	"Trailer",
	"Transfer-Encoding",
	"Upgrade",
}

// IsHopByHop reports whether f must not be forwarded: it is one of the
// hop-by-hop fields, or it is named in a Connection field of h (RFC 9110
// §7.6.1). A Connection field cannot take away the fields that frame the
// message or name its target (Content-Length, Host): a message whose
// framing the next hop would read differently is request smuggling.
func (h *Head) IsHopByHop(f Field) bool {
	for _, name := range hopByHop {
		if equalFold(f.Name, name) {
			return true
		}
	}
	if equalFold(f.Name, "Content-Length") || equalFold(f.Name, "Host") {
		return false
	}
	return hasToken(h, "Connection", f.Name)
}

// listElement splits the first element off a list,
//
//	#element = [ element ] *( OWS "," OWS [ element ] ) (RFC 9110 §5.6.1)
//
// returning it with OWS trimmed (empty for an empty element) and the rest
// after its comma.
func listElement(v []byte) (elem, rest []byte) {
	if i := bytes.IndexByte(v, ','); i >= 0 {
		return trimOWS(v[:i]), v[i+1:]
	}
	return trimOWS(v), nil
}
