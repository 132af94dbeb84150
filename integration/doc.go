// Package integration holds Hookgate's end-to-end tests. They build the real
// binary from ./cmd/caddy once, run it as a subprocess on loopback with a
// Badger spool in a temporary directory, and drive it with real signed
// deliveries and real upstream HTTP servers. The package has no non-test
// code besides this comment.
package integration
