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

// tlsServer is an HTTPS test server offering h2 and HTTP/1.1, counting
// the connections it accepts, and a gateway client (NewHTTPClient) that
// trusts it.
type tlsServer struct {
	*httptest.Server
	conns atomic.Int32
	hc    *http.Client
}

func newTLSServer(t *testing.T, h http.HandlerFunc) *tlsServer {
	t.Helper()
	s := &tlsServer{Server: httptest.NewUnstartedServer(h)}
	s.EnableHTTP2 = true
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			s.conns.Add(1)
		}
	}
	s.StartTLS()
	t.Cleanup(s.Close)
	if got := s.TLS.NextProtos; len(got) == 0 || got[0] != "h2" {
		t.Fatalf("test server offers %v, want h2 first", got)
	}
	roots := x509.NewCertPool()
	roots.AddCert(s.Certificate())
	s.hc = NewHTTPClient(&tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12})
	return s
}

// get fetches the server's root and returns the response with its body
// read and closed.
func (s *tlsServer) get(t *testing.T) (*http.Response, string) {
	t.Helper()
	resp, err := s.hc.Get(s.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(body)
}

func writeOK(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) }

// TestHTTPClientSpeaksHTTP1KeepAlive: the gateway client asks for HTTP/1.1
// even of a server that offers HTTP/2, and reuses its TLS connection for
// the next request instead of a handshake per request.
func TestHTTPClientSpeaksHTTP1KeepAlive(t *testing.T) {
	var protos []int
	s := newTLSServer(t, func(w http.ResponseWriter, r *http.Request) {
		protos = append(protos, r.ProtoMajor)
		writeOK(w, r)
	})
	for i := range 3 {
		resp, body := s.get(t)
		if body != "ok" {
			t.Fatalf("request %d: body %q", i, body)
		}
		if resp.ProtoMajor != 1 || resp.TLS == nil || resp.TLS.NegotiatedProtocol == "h2" {
			t.Fatalf("request %d: proto %s; want HTTP/1.1 over TLS", i, resp.Proto)
		}
	}
	for i, p := range protos {
		if p != 1 {
			t.Fatalf("server saw request %d as HTTP/%d", i, p)
		}
	}
	if n := s.conns.Load(); n != 1 {
		t.Fatalf("%d connections for 3 sequential requests, want 1 kept alive", n)
	}
}

// TestHTTPClientBoundsConnections: a burst of requests waits for the
// client's MaxConnsPerGateway connections instead of opening (and
// handshaking) one per request.
func TestHTTPClientBoundsConnections(t *testing.T) {
	var inFlight, peak atomic.Int32
	s := newTLSServer(t, func(w http.ResponseWriter, r *http.Request) {
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		time.Sleep(20 * time.Millisecond)
		writeOK(w, r)
	})
	const requests = 3 * MaxConnsPerGateway
	var wg sync.WaitGroup
	for range requests {
		wg.Go(func() {
			resp, err := s.hc.Get(s.URL)
			if err != nil {
				t.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	if n := s.conns.Load(); n > MaxConnsPerGateway {
		t.Fatalf("%d connections for %d concurrent requests, want at most %d", n, requests, MaxConnsPerGateway)
	}
	if p := peak.Load(); p < 2 {
		t.Fatalf("at most %d request in flight: the requests did not run concurrently", p)
	}
}

// TestHTTPClientResumesTLSSessions: a new connection to the gateway resumes
// the TLS session of an earlier one instead of a full handshake.
func TestHTTPClientResumesTLSSessions(t *testing.T) {
	s := newTLSServer(t, writeOK)
	var resumed []bool
	for range 2 {
		resp, _ := s.get(t)
		resumed = append(resumed, resp.TLS.DidResume)
		s.hc.CloseIdleConnections() // the next request needs a new connection
	}
	if resumed[0] || !resumed[1] {
		t.Fatalf("resumed %v, want a full handshake and then a resumed one", resumed)
	}
}
