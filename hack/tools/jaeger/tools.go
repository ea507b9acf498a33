//go:build tools

// Package tools pins Jaeger so that `go build github.com/jaegertracing/jaeger/cmd/jaeger`
// resolves inside this wrapper module.
package tools

import _ "github.com/jaegertracing/jaeger/cmd/jaeger"
