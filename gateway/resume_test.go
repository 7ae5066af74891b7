package gateway_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/kurer/kurer/gateway/client"
	"github.com/kurer/kurer/gateway/gatewaytest"
	"github.com/kurer/kurer/internal/faultproxy"
)

// TestUploadResumesAfterCut cuts the connection (TCP RST) in the middle of an
// 8 MiB upload; the client asks the gateway how much it holds and continues
// from there instead of starting again. The receiver gets the exact bytes.
func TestUploadResumesAfterCut(t *testing.T) {
	e := gatewaytest.New(t, nil)
	proxy, err := faultproxy.New(e.Srv.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	acct := e.PKI.Accounts["oslo"]
	c, err := client.New(client.Config{
		BaseURL: "https://" + proxy.Addr(), AccountID: e.IDs["oslo"], Signer: acct.Key, Cert: acct.Cert,
		TLS: e.TLS, Audience: e.Cfg.Audience, Now: e.Clock.Now, MaxRetries: 5,
	})
	if err != nil {
		t.Fatal(err)
	}
	// Fetch a token first, so the cut hits the body and not the handshake.
	if _, err := c.Token(t.Context()); err != nil {
		t.Fatal(err)
	}
	const size = 8 << 20
	body := gatewaytest.RandBytes(size)
	r := e.Routing("oslo", "bergen", body)

	proxy.SetFault(faultproxy.Fault{Mode: faultproxy.Reset, Dir: faultproxy.Upstream, After: 5 << 20})
	go func() {
		// Heal the link once a connection was reset.
		for range 2000 {
			for _, cs := range proxy.Conns() {
				if cs.Reset {
					proxy.SetFault(faultproxy.Fault{Mode: faultproxy.Pass})
					return
				}
			}
			time.Sleep(5 * time.Millisecond) // polling the proxy's counters
		}
	}()
	if _, err := c.Submit(t.Context(), r, bytes.NewReader(body)); err != nil {
		t.Fatalf("submit across a cut: %v", err)
	}
	var up int64
	resets := 0
	for _, cs := range proxy.Conns() {
		up += cs.Up
		if cs.Reset {
			resets++
		}
	}
	if resets == 0 {
		t.Fatal("the fault never cut the upload; the test proves nothing")
	}
	if up >= size*3/2 {
		t.Fatalf("%d bytes went up for an %d-byte envelope: the upload restarted from zero", up, size)
	}
	t.Logf("8 MiB upload across a reset: %.2f MiB sent in all", float64(up)/(1<<20))

	bergen := e.Client("bergen")
	items := gatewaytest.PollUntil(t, bergen, 1)
	f, err := openTemp(t)
	if err != nil {
		t.Fatal(err)
	}
	if err := bergen.Download(t.Context(), items[0].Routing.ID, f); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readAll(t, f), body) {
		t.Fatal("resumed upload arrived corrupted")
	}
}
