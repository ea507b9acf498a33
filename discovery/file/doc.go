// Package file is the mesh.yaml discovery source: services, their ports,
// traffic policy and endpoints written by hand in one YAML file.
//
// The controlplane runs it for --config-file. The file is watched: every
// change is parsed in full and, if valid, replaces what the source reported
// before. A broken file (bad YAML, an unknown field, a duplicate service, an
// invalid address or port) is reported with its position and reason, and
// the last good config keeps being served. Services whose endpoints come
// from DNS (a `dns:` block instead of `endpoints:`) are handed to the dns
// source. The source must never serve half of a file.
package file
