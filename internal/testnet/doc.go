// Package testnet holds the tests' loopback servers: an HTTP server that
// records the requests it receives and a TCP listener that never answers,
// both closed when the test ends.
package testnet
