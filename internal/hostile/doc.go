// Package hostile holds the hostile-input suite: tests that start real
// components (a real gateway on 127.0.0.1:0 with real TLS and a test PKI)
// and feed them hostile input, asserting the exact public error code and
// that no state changed. The threats, defences and the tests that prove
// them are listed in docs/THREATS.md. The package has no non-test code.
package hostile
