package client

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestHTTPClientSpeaksHTTP1KeepAlive: the gateway client asks for HTTP/1.1
// even of a server that offers HTTP/2, and reuses its TLS connection for
// the next request instead of a handshake per request.
func TestHTTPClientSpeaksHTTP1KeepAlive(t *testing.T) {
	var protos []int
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		protos = append(protos, r.ProtoMajor)
		_, _ = w.Write([]byte("ok"))
	}))
	srv.EnableHTTP2 = true
	var conns atomic.Int32
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.StartTLS()
	defer srv.Close()
	if got := srv.TLS.NextProtos; len(got) == 0 || got[0] != "h2" {
		t.Fatalf("test server offers %v, want h2 first", got)
	}

	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	hc := NewHTTPClient(&tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12})
	for i := 0; i < 3; i++ {
		resp, err := hc.Get(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if err != nil || string(body) != "ok" {
			t.Fatalf("request %d: body %q, %v", i, body, err)
		}
		if resp.ProtoMajor != 1 || resp.TLS == nil || resp.TLS.NegotiatedProtocol == "h2" {
			t.Fatalf("request %d: proto %s, ALPN %q; want HTTP/1.1 over TLS", i, resp.Proto, resp.TLS.NegotiatedProtocol)
		}
	}
	for i, p := range protos {
		if p != 1 {
			t.Fatalf("server saw request %d as HTTP/%d", i, p)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("%d connections for 3 sequential requests, want 1 kept alive", n)
	}
}

// TestHTTPClientBoundsConnections: a burst of requests waits for the
// client's MaxConnsPerGateway connections instead of opening (and
// handshaking) one per request.
func TestHTTPClientBoundsConnections(t *testing.T) {
	var inFlight, peak atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		time.Sleep(20 * time.Millisecond)
		_, _ = w.Write([]byte("ok"))
	}))
	var conns atomic.Int32
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.StartTLS()
	defer srv.Close()
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	hc := NewHTTPClient(&tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12})

	const requests = 3 * MaxConnsPerGateway
	var wg sync.WaitGroup
	errs := make(chan error, requests)
	for range requests {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := hc.Get(srv.URL)
			if err != nil {
				errs <- err
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := conns.Load(); n > MaxConnsPerGateway {
		t.Fatalf("%d connections for %d concurrent requests, want at most %d", n, requests, MaxConnsPerGateway)
	}
	if p := peak.Load(); p < 2 {
		t.Fatalf("at most %d request in flight: the requests did not run concurrently", p)
	}
}

// TestHTTPClientResumesTLSSessions: a new connection to the gateway resumes
// the TLS session of an earlier one instead of a full handshake.
func TestHTTPClientResumesTLSSessions(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("ok"))
	}))
	srv.StartTLS()
	defer srv.Close()
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	hc := NewHTTPClient(&tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12})
	var resumed []bool
	for range 2 {
		resp, err := hc.Get(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		resumed = append(resumed, resp.TLS.DidResume)
		hc.CloseIdleConnections() // the next request needs a new connection
	}
	if resumed[0] || !resumed[1] {
		t.Fatalf("resumed %v, want a full handshake and then a resumed one", resumed)
	}
}
