// Package testenv starts throwaway servers for integration tests: each one
// in a temp dir, on a free loopback port, stopped and removed when the test
// (or TestMain) ends. A server that cannot start fails the test with the
// reason; nothing is skipped. Run testenv/install-deps.sh (make test does)
// to install the Debian packages they need.
package testenv
