package wire

// Byte classes, one bit each in chars.
const (
	// tchar (RFC 9110 §5.6.2): a byte of a token, such as a method or a
	// field name.
	cToken = 1 << iota
	// field-vchar, SP or HTAB (RFC 9110 §5.5): a byte of a field value,
	// reason-phrase or chunk extension. obs-text (0x80–0xFF) is included.
	cValue
	// A byte net/http allows in a Host field value (uri-host [":" port]
	// loosely: unreserved, sub-delims, "%", ":", "[", "]").
	cHost
	// unreserved / sub-delims (RFC 3986 §2.2, §2.3): a byte of a reg-name.
	cRegName
	// A byte of a request-target: VCHAR or obs-text, no SP, no CTL.
	cTarget
	// HEXDIG.
	cHex
	// DIGIT.
	cDigit
)

// chars classifies every byte, so each grammar check is one table load.
var chars = func() (t [256]uint8) {
	for c := 0x21; c < 0x7F; c++ {
		t[c] |= cValue | cTarget
	}
	for c := 0x80; c < 0x100; c++ {
		t[c] |= cValue | cTarget
	}
	t[' '] |= cValue
	t['\t'] |= cValue
	for _, c := range []byte("!#$%&'*+-.^_`|~") {
		t[c] |= cToken
	}
	for _, c := range []byte("-._~!$&'()*+,;=") {
		t[c] |= cRegName | cHost
	}
	for _, c := range []byte("%:[]") {
		t[c] |= cHost
	}
	for c := '0'; c <= '9'; c++ {
		t[c] |= cToken | cRegName | cHost | cHex | cDigit
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] |= cToken | cRegName | cHost
		t[c-'a'+'A'] |= cToken | cRegName | cHost
	}
	for _, c := range []byte("abcdefABCDEF") {
		t[c] |= cHex
	}
	return t
}()

func is(c byte, class uint8) bool { return chars[c]&class != 0 }

// all reports whether every byte of b is in class.
func all(b []byte, class uint8) bool {
	for _, c := range b {
		if chars[c]&class == 0 {
			return false
		}
	}
	return true
}

// token reports whether b is a token: 1*tchar (RFC 9110 §5.6.2).
func token(b []byte) bool { return len(b) > 0 && all(b, cToken) }

// isOWS reports whether c is OWS: SP or HTAB (RFC 9110 §5.6.3).
func isOWS(c byte) bool { return c == ' ' || c == '\t' }

// trimOWS removes OWS from both ends of b.
func trimOWS(b []byte) []byte {
	for len(b) > 0 && isOWS(b[0]) {
		b = b[1:]
	}
	for len(b) > 0 && isOWS(b[len(b)-1]) {
		b = b[:len(b)-1]
	}
	return b
}

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// equalFold reports whether b and s are equal under ASCII case folding.
func equalFold[S string | []byte](b []byte, s S) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		if lower(b[i]) != lower(s[i]) {
			return false
		}
	}
	return true
}
