// Package protocoltest holds the test helpers every frontend's tests share:
// TLS configurations for a loopback server and its clients and, in
// store.go, a real single-node mail store in a temporary directory.
// Nothing in production imports it.
package protocoltest
