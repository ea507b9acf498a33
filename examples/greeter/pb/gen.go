// Package pb holds the greeter's protobuf and gRPC code, generated from
// greeter.proto (protoc from Debian's protobuf-compiler, protoc-gen-go and
// protoc-gen-go-grpc from the Go module proxy).
package pb

//go:generate protoc --go_out=. --go_opt=paths=source_relative --go-grpc_out=. --go-grpc_opt=paths=source_relative greeter.proto
