package crashtest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/kurer/kurer/internal/faultproxy"
)

// proxyBytes sums the bytes a proxy forwarded up (agent to gateway) and
// down over every connection it ever carried.
func proxyBytes(p *faultproxy.Proxy) (up, down int64) {
	for _, c := range p.Conns() {
		up += c.Up
		down += c.Down
	}
	return up, down
}

// TestCrashFaults puts a fault proxy between each agent and the gateway
// and cycles drop, stall, reset and slow while messages of mixed sizes are
// sent; then it kills the gateway during the upload and again during the
// download of a large file and checks that both resumed (the gateway got,
// and the receiver fetched, fewer than 1.5 times the envelope's size) and
// that everything arrived exactly once, intact, with its receipt.
func TestCrashFaults(t *testing.T) {
	messages, large := 40, int64(64<<20)
	if full() {
		messages, large = 300, 512<<20
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewPCG(seed, 3))

	var proxies []*faultproxy.Proxy
	var mu sync.Mutex
	nw := startNet(t, 2, func(_ int, gw string) string {
		p, err := faultproxy.New(gw)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = p.Close() })
		mu.Lock()
		proxies = append(proxies, p)
		mu.Unlock()
		return p.Addr()
	})
	ctx, cancel := context.WithTimeout(t.Context(), map[bool]time.Duration{false: 80 * time.Second, true: 20 * time.Minute}[full()])
	defer cancel()
	kills := 0

	// Phase 1: faults while sending.
	var msgs []*msg
	for range messages {
		from := r.IntN(2)
		msgs = append(msgs, newMsg(from, 1-from, r.Uint64(), mixedSize(r, false)))
	}
	faults := []faultproxy.Fault{
		{Mode: faultproxy.Drop},
		{Mode: faultproxy.Stall, For: 1500 * time.Millisecond},
		{Mode: faultproxy.Reset, After: 64 << 10},
		{Mode: faultproxy.Slow, BytesPerSec: 256 << 10},
		{Mode: faultproxy.Reset, After: 0, Dir: faultproxy.Downstream},
	}
	// Two rounds of every fault, each on a random proxy for 400 ms while a
	// batch of messages is handed to the agents (whose uploads and polls go
	// through the proxies); the agents retry in the background.
	steps := 2 * len(faults)
	var applied []string
	var wg sync.WaitGroup
	errc := make(chan error, len(msgs))
	for i := range steps {
		f := faults[i%len(faults)]
		p := proxies[r.IntN(len(proxies))]
		p.SetFault(f)
		applied = append(applied, f.Mode.String())
		for _, m := range msgs[i*len(msgs)/steps : (i+1)*len(msgs)/steps] {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := nw.send(ctx, m); err != nil {
					errc <- err
				}
			}()
		}
		select {
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		case <-time.After(400 * time.Millisecond):
		}
		p.SetFault(faultproxy.Fault{})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	t.Logf("faults applied: %v", applied)

	// Phase 2: a large file; the gateway is killed during its upload and
	// again during its download.
	big := newMsg(0, 1, r.Uint64(), large)
	up0, _ := proxyBytes(proxies[0])
	_, down0 := proxyBytes(proxies[1])
	sendErr := make(chan error, 1)
	go func() { sendErr <- nw.send(ctx, big) }()
	if err := poll(ctx, 60*time.Second, "upload under way", func() bool {
		up, _ := proxyBytes(proxies[0])
		return up-up0 > large/3
	}); err != nil {
		t.Fatal(err)
	}
	nw.restart(ctx, nw.gw)
	kills++
	if err := <-sendErr; err != nil {
		t.Fatal(err)
	}
	if err := poll(ctx, 60*time.Second, "download under way", func() bool {
		_, down := proxyBytes(proxies[1])
		return down-down0 > large/3
	}); err != nil {
		t.Fatal(err)
	}
	nw.restart(ctx, nw.gw)
	kills++

	all := append(msgs, big)
	res := nw.settle(ctx, all, time.Until(deadline(ctx)))
	nw.checkGatewayAudit(all, res)
	up, _ := proxyBytes(proxies[0])
	_, down := proxyBytes(proxies[1])
	t.Logf("large file %d bytes: agent->gateway %d bytes (%.2fx), gateway->agent %d bytes (%.2fx)",
		large, up-up0, float64(up-up0)/float64(large), down-down0, float64(down-down0)/float64(large))
	if float64(up-up0) >= 1.5*float64(large) {
		t.Errorf("upload did not resume: the gateway got %d bytes for a %d-byte file", up-up0, large)
	}
	if float64(down-down0) >= 1.5*float64(large) {
		t.Errorf("download did not resume: the receiver fetched %d bytes for a %d-byte file", down-down0, large)
	}
	for i, p := range res.problems {
		if i == 20 {
			break
		}
		t.Log(p)
	}
	if !res.ok() {
		t.Error("not every message arrived exactly once, intact, with its receipt")
	}
	fmt.Println(res.line(kills, len(all)))
}
