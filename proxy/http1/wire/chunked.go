package wire

// Chunked finds the end of a chunked body (RFC 9112 §7.1) and refuses a
// malformed one, for an engine that relays the body's bytes unchanged:
//
//	chunked-body = *chunk last-chunk trailer-section CRLF
//	chunk        = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
//	last-chunk   = 1*("0") [ chunk-ext ] CRLF
//
// It is a state machine fed the body in pieces split anywhere; it never
// looks past the bytes it is given. The zero value is ready to use.
type Chunked struct {
	state    chunkState
	err      error  // the refusal, repeated by every later Scan
	size     uint64 // chunk-size being read, then chunk-data left to skip
	digits   int    // hex digits of chunk-size read
	line     int    // bytes of the chunk-size line read, CRLF excluded
	excess   int    // non-data bytes beyond the allowance (see MaxChunkOverhead)
	trailers int    // bytes of the trailer section read
}

type chunkState uint8

const (
	stSize         chunkState = iota // chunk-size, first digit
	stSizeMore                       // chunk-size, more digits or what follows
	stExt                            // chunk-ext
	stSizeLF                         // LF ending the chunk-size line
	stData                           // chunk-data
	stDataCR                         // CR after chunk-data
	stDataLF                         // LF after chunk-data
	stTrailerStart                   // start of a trailer field line, or the final CRLF
	stTrailerName                    // field-name of a trailer field
	stTrailerValue                   // field-value of a trailer field
	stTrailerLF                      // LF ending a trailer field line
	stEndLF                          // LF ending the chunked body
	stDone
)

// Reset makes c ready for the next body.
func (c *Chunked) Reset() { *c = Chunked{} }

// Scan consumes as much of b as belongs to the chunked body, returning the
// bytes consumed and done once the last chunk and the trailer section, with
// its final CRLF, are consumed; the bytes after n are the next message's.
// It refuses (an error wrapping ErrMalformed) bad hex, a chunk-size over
// MaxChunkSize, chunk data not followed by CRLF, a bare LF or CR, control
// characters in extensions, malformed trailer fields, a trailer section
// over MaxTrailerBytes and a chunk-size line over MaxChunkLine. After a
// refusal every Scan returns it again, until Reset.
func (c *Chunked) Scan(b []byte) (n int, done bool, err error) {
	if c.err != nil {
		return 0, false, c.err
	}
	for n < len(b) && c.state != stDone {
		if c.state == stData {
			n += c.chunkData(b[n:])
			continue
		}
		if c.state >= stTrailerStart {
			err = c.trailerSection(b[n])
		} else {
			err = c.chunkLine(b[n])
		}
		if err != nil {
			c.err = err
			return n, false, err
		}
		n++
	}
	return n, c.state == stDone, nil
}

// chunkLine takes one byte of the lines around chunk-data:
//
//	chunk-size CRLF, chunk-size = 1*HEXDIG (RFC 9112 §7.1)
//	chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] ) (§7.1.1)
//	chunk-data CRLF
//
// No whitespace may precede ";" (net/http refuses it too), and an extension
// is checked only for bytes a field value may hold: wire skips it.
func (c *Chunked) chunkLine(ch byte) error {
	switch c.state {
	case stSize, stSizeMore:
		return c.chunkSize(ch)
	case stExt:
		return c.chunkExt(ch)
	case stSizeLF:
		if ch != '\n' {
			return errBareCR
		}
		if err := c.overhead(); err != nil {
			return err
		}
		c.line, c.digits = 0, 0
		if c.size == 0 {
			c.state = stTrailerStart
		} else {
			c.state = stData
		}
	case stDataCR:
		if ch != '\r' {
			return errChunkDataEnd
		}
		c.state = stDataLF
	case stDataLF:
		if ch != '\n' {
			return errChunkDataEnd
		}
		c.state = stSize
	}
	return nil
}

// chunkSize takes one byte of chunk-size = 1*HEXDIG, or the ";" or CR after
// it.
func (c *Chunked) chunkSize(ch byte) error {
	if err := c.lineByte(); err != nil {
		return err
	}
	if d, ok := unhex(ch); ok {
		c.digits++
		if c.digits > maxChunkSizeDigits || c.size > MaxChunkSize>>4 {
			return errChunkTooLarge
		}
		c.size = c.size<<4 | d
		if c.size > MaxChunkSize {
			return errChunkTooLarge
		}
		c.state = stSizeMore
		return nil
	}
	if c.state == stSize {
		return errChunkSize
	}
	switch ch {
	case ';':
		c.state = stExt
	case '\r':
		c.state = stSizeLF
	case '\n':
		return errBareLF
	default:
		return errChunkSize
	}
	return nil
}

// chunkExt takes one byte of a chunk-ext, or the CR after it.
func (c *Chunked) chunkExt(ch byte) error {
	if err := c.lineByte(); err != nil {
		return err
	}
	switch {
	case ch == '\r':
		c.state = stSizeLF
	case ch == '\n':
		return errBareLF
	case !is(ch, cValue):
		return errChunkExt
	}
	return nil
}

// lineByte counts a byte of the chunk-size line against MaxChunkLine.
func (c *Chunked) lineByte() error {
	c.line++
	if c.line > MaxChunkLine+1 { // +1: the CR ending the line
		return errChunkLine
	}
	return nil
}

// overhead charges a chunk-size line against the allowance of 16 bytes per
// chunk plus twice its data, as net/http's chunked reader does.
func (c *Chunked) overhead() error {
	c.excess += c.line + 1 // + the LF; the CR is in c.line
	c.excess -= 16 + 2*int(min(c.size, MaxChunkOverhead))
	c.excess = max(c.excess, 0)
	if c.excess > MaxChunkOverhead {
		return errChunkOverhead
	}
	return nil
}

// chunkData skips chunk-data = 1*OCTET (RFC 9112 §7.1), returning the bytes
// of b it takes.
func (c *Chunked) chunkData(b []byte) int {
	k := uint64(len(b))
	if k >= c.size {
		k = c.size
		c.state = stDataCR
	}
	c.size -= k
	return int(k)
}

// trailerSection takes one byte of
//
//	trailer-section = *( field-line CRLF ) (RFC 9112 §7.1.2)
//
// or of the CRLF that ends the body, checking field lines as fieldLine does.
func (c *Chunked) trailerSection(ch byte) error {
	c.trailers++
	if c.trailers > MaxTrailerBytes {
		return errTrailerTooLarge
	}
	switch c.state {
	case stTrailerStart:
		switch {
		case ch == '\r':
			c.state = stEndLF
		case isOWS(ch):
			return errObsFold
		case ch == ':':
			return errEmptyName
		case ch == '\n':
			return errBareLF
		case !is(ch, cToken):
			return errFieldName
		default:
			c.state = stTrailerName
		}
	case stTrailerName:
		switch {
		case ch == ':':
			c.state = stTrailerValue
		case isOWS(ch):
			return errSpaceBeforeColon
		case ch == '\n':
			return errBareLF
		case !is(ch, cToken):
			return errFieldName
		}
	case stTrailerValue:
		switch {
		case ch == '\r':
			c.state = stTrailerLF
		case ch == '\n':
			return errBareLF
		case !is(ch, cValue):
			return errFieldValue
		}
	case stTrailerLF, stEndLF:
		if ch != '\n' {
			return errBareCR
		}
		if c.state == stEndLF {
			c.state = stDone
		} else {
			c.state = stTrailerStart
		}
	}
	return nil
}

// unhex returns the value of HEXDIG c.
func unhex(c byte) (uint64, bool) {
	switch {
	case '0' <= c && c <= '9':
		return uint64(c - '0'), true
	case 'a' <= c && c <= 'f':
		return uint64(c - 'a' + 10), true
	case 'A' <= c && c <= 'F':
		return uint64(c - 'A' + 10), true
	}
	return 0, false
}
