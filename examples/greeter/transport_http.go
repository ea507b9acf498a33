package greeter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"

	kittransport "github.com/go-kit/kit/transport"
	httptransport "github.com/go-kit/kit/transport/http"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
)

// InstanceHeader is the HTTP header (and, lower-cased, the gRPC metadata
// key) that names the instance that answered.
const InstanceHeader = "X-Instance"

// maxJSONBody bounds the body of POST /greet.
const maxJSONBody = 1 << 20

// errBadRequest marks request decoding errors; they are answered with 400.
var errBadRequest = errors.New("bad request")

// NewHTTPHandler returns the HTTP/JSON transport of e:
//
//	GET  /greet?name=X        {"message":..,"instance":..}
//	POST /greet {"name":"X"}  the same
//	GET  /healthz             200 "ok"
//	*    /echo                the request body, streamed back
//	GET  /status/{code}       answers with that status code
//
// Errors are JSON {"error":..}: 400 for ErrEmptyName and malformed requests,
// 500 otherwise. Every response has the header X-Instance: instance. A nil
// logger discards.
//
// Every request but GET /healthz gets a server span, named after its route
// ("GET /greet"), from the global TracerProvider, as a child of the trace
// context it carries (read with the global propagator).
func NewHTTPHandler(e Endpoints, instance string, logger *slog.Logger) http.Handler {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	opts := []httptransport.ServerOption{
		httptransport.ServerErrorEncoder(encodeHTTPError),
		httptransport.ServerErrorHandler(kittransport.ErrorHandlerFunc(func(ctx context.Context, err error) {
			level := slog.LevelWarn
			if httpStatus(err) < http.StatusInternalServerError {
				level = slog.LevelDebug
			}
			logger.Log(ctx, level, "greet failed", slog.Any("err", err))
		})),
	}
	mux := http.NewServeMux()
	mux.Handle("GET /greet", httptransport.NewServer(e.Greet, decodeHTTPGreetQuery, httptransport.EncodeJSONResponse, opts...))
	mux.Handle("POST /greet", httptransport.NewServer(e.Greet, decodeHTTPGreetJSON, httptransport.EncodeJSONResponse, opts...))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, "ok")
	})
	mux.Handle("/echo", echoHandler(logger))
	mux.HandleFunc("GET /bytes/{n}", bytesHandler)
	mux.HandleFunc("GET /status/{code}", func(w http.ResponseWriter, r *http.Request) {
		code, err := strconv.Atoi(r.PathValue("code"))
		if err != nil || code < 200 || code > 599 {
			encodeHTTPError(r.Context(), fmt.Errorf("%w: status code %q not in 200..599", errBadRequest, r.PathValue("code")), w)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(code)
		if code != http.StatusNoContent && code != http.StatusNotModified {
			_, _ = io.WriteString(w, http.StatusText(code))
		}
	})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(InstanceHeader, instance)
		mux.ServeHTTP(w, r)
	})
	// otelhttp names the span "METHOD ROUTE" from the pattern the mux
	// matched, so /status/503 is "GET /status/{code}", not one name per code.
	// Kubernetes probes /healthz every few seconds: traces of it are noise.
	return otelhttp.NewHandler(h, "greeter", otelhttp.WithFilter(func(r *http.Request) bool {
		return r.URL.Path != "/healthz"
	}))
}

// maxStreamBytes bounds GET /bytes/{n}.
const maxStreamBytes = 16 << 30

// bytesHandler streams n bytes of a fixed pattern (byte i is i mod 251)
// with their Content-Length, as fast as the client takes them: a large
// download for tests of flow control and memory.
func bytesHandler(w http.ResponseWriter, r *http.Request) {
	n, err := strconv.ParseInt(r.PathValue("n"), 10, 64)
	if err != nil || n < 0 || n > maxStreamBytes {
		encodeHTTPError(r.Context(), fmt.Errorf("%w: byte count %q not in 0..%d", errBadRequest, r.PathValue("n"), int64(maxStreamBytes)), w)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
	// 251 is prime, so a chunk of 251·k bytes repeats the pattern exactly.
	chunk := make([]byte, 251*128)
	for i := range chunk {
		chunk[i] = byte(i % 251)
	}
	for n > 0 {
		k := min(n, int64(len(chunk)))
		if _, err := w.Write(chunk[:k]); err != nil {
			return // the client went away
		}
		n -= k
	}
}

// echoHandler streams the request body back as the response body.
func echoHandler(logger *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// HTTP/1.1 would otherwise stop reading the body once the response
		// starts; HTTP/2 is full duplex already.
		if err := http.NewResponseController(w).EnableFullDuplex(); err != nil && !errors.Is(err, http.ErrNotSupported) {
			logger.Debug("echo: enable full duplex", slog.Any("err", err))
		}
		ct := r.Header.Get("Content-Type")
		if ct == "" {
			ct = "application/octet-stream"
		}
		w.Header().Set("Content-Type", ct)
		if r.ContentLength >= 0 {
			w.Header().Set("Content-Length", strconv.FormatInt(r.ContentLength, 10))
		}
		w.WriteHeader(http.StatusOK)
		if _, err := io.Copy(w, r.Body); err != nil {
			logger.Debug("echo: copy body", slog.Any("err", err))
		}
	})
}

func decodeHTTPGreetQuery(_ context.Context, r *http.Request) (any, error) {
	return GreetRequest{Name: r.URL.Query().Get("name")}, nil
}

func decodeHTTPGreetJSON(_ context.Context, r *http.Request) (any, error) {
	var req GreetRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, maxJSONBody)).Decode(&req); err != nil {
		return nil, fmt.Errorf("%w: decode JSON body: %w", errBadRequest, err)
	}
	return req, nil
}

// httpError is the JSON body of an error response.
type httpError struct {
	Error string `json:"error"`
}

func httpStatus(err error) int {
	switch {
	case errors.Is(err, ErrEmptyName), errors.Is(err, errBadRequest):
		return http.StatusBadRequest
	default:
		return http.StatusInternalServerError
	}
}

func encodeHTTPError(_ context.Context, err error, w http.ResponseWriter) {
	msg := err.Error()
	if errors.Is(err, ErrEmptyName) {
		// A frontend's error wraps its backend's; the bare text is what
		// the clients turn back into ErrEmptyName.
		msg = ErrEmptyName.Error()
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(httpStatus(err))
	_ = json.NewEncoder(w).Encode(httpError{Error: msg})
}

var (
	_ httptransport.DecodeRequestFunc = decodeHTTPGreetQuery
	_ httptransport.DecodeRequestFunc = decodeHTTPGreetJSON
	_ httptransport.ErrorEncoder      = encodeHTTPError
)
