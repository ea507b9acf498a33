package wire

import (
	"errors"
	"fmt"
)

// Limits.
const (
	// MaxHeaders is the most field lines a head may have; more is
	// ErrTooManyHeaders (the engine answers 431).
	MaxHeaders = 100
	// MaxChunkSize is the largest chunk-size accepted (RFC 9112 §7.1 leaves
	// it to the recipient to guard against overflow).
	MaxChunkSize = 1 << 62
	// maxChunkSizeDigits is the most hex digits in a chunk-size, leading
	// zeros included, as net/http's chunked reader allows.
	maxChunkSizeDigits = 16
	// MaxChunkLine is the longest chunk-size line, extensions included and
	// CRLF excluded (net/http's limit).
	MaxChunkLine = 4095
	// MaxChunkOverhead bounds the non-data bytes (chunk-size lines) a
	// chunked body may send beyond 16 bytes per chunk plus twice its data,
	// as net/http does, so extensions cannot dwarf the data.
	MaxChunkOverhead = 16 << 10
	// MaxTrailerBytes is the largest trailer section, CRLFs included.
	MaxTrailerBytes = 16 << 10
)

var (
	// ErrIncomplete means the head is not complete in the buffer yet: read
	// more and parse again.
	ErrIncomplete = errors.New("wire: incomplete message head")
	// ErrMalformed is wrapped by every syntax or framing refusal; the
	// message says why.
	ErrMalformed = errors.New("wire: malformed message")
	// ErrTooManyHeaders means a head has more than MaxHeaders fields.
	ErrTooManyHeaders = errors.New("wire: too many header fields")
	// ErrTransferEncoding (wrapping ErrMalformed) means a transfer coding
	// other than a single "chunked": a server answers 501, as net/http
	// does (RFC 9112 §6.1).
	ErrTransferEncoding = malformed("Transfer-Encoding other than chunked")
)

// The reasons for a refusal, one per rule, so tests can tell them apart.
var (
	errBareLF           = malformed("bare LF line ending")
	errBareCR           = malformed("bare CR")
	errRequestLine      = malformed("request line is not method SP request-target SP HTTP-version")
	errMethod           = malformed("method is not a token")
	errTarget           = malformed("invalid request-target")
	errAsterisk         = malformed("asterisk-form request-target outside OPTIONS")
	errUserinfo         = malformed("userinfo in request-target")
	errVersion          = malformed("HTTP version is not HTTP/1.0 or HTTP/1.1")
	errStatusLine       = malformed("status line is not HTTP-version SP 3DIGIT [SP reason-phrase]")
	errObsFold          = malformed("obs-fold (field line starting with whitespace)")
	errFieldName        = malformed("field name is not a token")
	errEmptyName        = malformed("empty field name")
	errSpaceBeforeColon = malformed("whitespace between field name and colon")
	errFieldValue       = malformed("control character in field value")
	errContentLength    = malformed("Content-Length is not a decimal number")
	errCLMismatch       = malformed("differing Content-Length fields")
	errCLAndTE          = malformed("both Content-Length and Transfer-Encoding")
	errTE10             = malformed("Transfer-Encoding in an HTTP/1.0 message")
	errTrailerField     = malformed("Trailer field names a framing field")
	errMissingHost      = malformed("HTTP/1.1 request without Host")
	errDuplicateHost    = malformed("more than one Host field")
	errHost             = malformed("invalid Host field value")
	errChunkSize        = malformed("invalid chunk-size")
	errChunkTooLarge    = malformed("chunk-size too large")
	errChunkExt         = malformed("control character in chunk extension")
	errChunkLine        = malformed("chunk-size line too long")
	errChunkOverhead    = malformed("chunked body has too much non-data")
	errChunkDataEnd     = malformed("chunk data not followed by CRLF")
	errTrailerTooLarge  = malformed("trailer section too large")
)

func malformed(reason string) error { return fmt.Errorf("%w: %s", ErrMalformed, reason) }
