package gateway_test

import (
	"crypto/tls"
	"errors"
	"net"
	"os"
	"testing"
	"time"

	"github.com/kurer/kurer/gateway/gatewaytest"
	"github.com/kurer/kurer/internal/metricstest"
)

// TestShutdownClosesFreshConnections: connections that never carried a
// request (an HTTP/1.1 client keeps one when it dialled for a request that
// went out on another connection first) do not hold up the gateway's
// graceful shutdown; http.Server alone waits 5 s for each.
func TestShutdownClosesFreshConnections(t *testing.T) {
	e := gatewaytest.New(t, nil)
	addr := e.Srv.Addr().String()
	silent, err := net.Dial("tcp", addr) // not even a TLS handshake
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	shaken, err := tls.Dial("tcp", addr, e.TLS) // handshake, no request
	if err != nil {
		t.Fatal(err)
	}
	defer shaken.Close()
	metrics := "http://" + e.Srv.MetricsAddr().String()
	for deadline := time.Now().Add(10 * time.Second); metricstest.Scrape(t, metrics)["kurer_gateway_connections_open"] < 2; {
		if time.Now().After(deadline) {
			t.Fatal("the gateway did not count both connections")
		}
		time.Sleep(10 * time.Millisecond)
	}

	begin := time.Now()
	e.Stop()
	if took := time.Since(begin); took > 2*time.Second {
		t.Fatalf("shutdown took %v with two connections that never carried a request", took)
	}
	for _, c := range []net.Conn{silent, shaken} {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("connection still open after shutdown: read %d, %v", n, err)
		}
	}
}
