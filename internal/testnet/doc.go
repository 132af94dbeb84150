// Package testnet holds the tests' loopback servers: an HTTP server that
// records the requests it receives, closed when the test ends.
package testnet
