package gateway_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/kurer/kurer/gateway"
	"github.com/kurer/kurer/gateway/api"
	"github.com/kurer/kurer/gateway/client"
	"github.com/kurer/kurer/gateway/gatewaytest"
	"github.com/kurer/kurer/internal/metricstest"
)

// BenchmarkSubmitDeliverAck measures the embedded gateway end to end for
// 10 KiB envelopes: senders submit (fsynced accept), the receiver long-polls,
// downloads and acks each one (fsynced). It reports messages/s of
// accepted+delivered+acked and the p99 accept latency.
//
//	go test -run '^$' -bench SubmitDeliverAck -benchtime 6000x ./gateway/
//
// KURER_BENCH_WORKERS sets the workers per side (default 16: sending
// clients, and receiving pollers), KURER_BENCH_RATE sends that many
// messages/s in an open loop (default: a closed loop, as fast as the
// gateway takes them), for the p99 accept latency at a given load.
//
// By default the senders are two accounts and the receivers share a third
// account's mailbox. KURER_BENCH_ACCOUNTS=A (at least 2, at most the
// workers) runs A accounts instead, each an agent that both sends and
// receives: worker w sends as and polls for account w mod A, each message
// goes to another of the accounts in turn, and the pollers ack the
// gateway's notices (delivered) as well as the messages, as agents do.
// msgs/s counts the messages only.
func BenchmarkSubmitDeliverAck(b *testing.B) {
	e := gatewaytest.New(b, nil)
	// The runtime settings `kurer gateway serve` makes, unless the
	// environment sets them (for A/B runs).
	if os.Getenv("GOGC") == "" {
		defer debug.SetGCPercent(debug.SetGCPercent(gateway.DefaultGCPercent))
	}
	if os.Getenv("GOMAXPROCS") == "" {
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(gateway.DefaultMaxProcs()))
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		defer debug.SetMemoryLimit(debug.SetMemoryLimit(gateway.DefaultMemoryLimit))
	}
	senders, receivers := []string{"oslo", "trondheim"}, []string{"bergen"}
	if n := benchAccounts(); n > 0 {
		if n < 2 || n > benchWorkers() {
			b.Fatalf("KURER_BENCH_ACCOUNTS=%d: want 2..%d (the workers per side)", n, benchWorkers())
		}
		senders = nil
		for i := range n {
			name := fmt.Sprintf("agent-%02d", i+1)
			e.AddAccount(name)
			senders = append(senders, name)
		}
		receivers = senders
	}
	many := len(receivers) > 1
	body := gatewaytest.RandBytes(10 << 10)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	dlDir := b.TempDir()
	var acked, notices, polls atomic.Int64
	total := int64(b.N)
	recvDone := make(chan struct{})
	for w := range benchWorkers() { // receiver workers share their account's mailbox
		// Each its own connection, and small envelopes inline in the poll
		// answer, as agents have.
		rc := e.ClientWith(receivers[w%len(receivers)], func(c *client.Config) { c.PollInline = 64 << 10 })
		go func() {
			// One download file per worker, for envelopes that do not
			// come inline: the load generator's own file creation is not
			// the gateway's cost.
			f, err := createTemp(dlDir)
			if err != nil {
				b.Error(err)
				return
			}
			defer f.Close()
			for acked.Load() < total && ctx.Err() == nil {
				items, err := rc.Poll(ctx, time.Second, 8)
				if err != nil {
					continue
				}
				if len(items) > 0 {
					polls.Add(1)
				}
				var taken, noticeIDs []string
				for _, it := range items {
					if it.Kind == api.KindNotice && many {
						// An agent verifies the notice (on its own
						// machine) and acks it with the poll's messages.
						noticeIDs = append(noticeIDs, it.Routing.ID)
						continue
					}
					if it.Kind != api.KindMessage {
						continue
					}
					// Inline content came with the poll, its digest checked
					// by the client. It is not written anywhere: the agent's
					// spool is on the agent's machine, not the gateway's.
					if it.Content == nil {
						if err := f.Truncate(0); err != nil {
							b.Error(err)
							return
						}
						if err := rc.Download(ctx, it.Routing.ID, f); err != nil {
							continue
						}
					}
					taken = append(taken, it.Routing.ID)
				}
				msgs := taken
				taken = append(taken[:len(taken):len(taken)], noticeIDs...)
				// One ack request for the poll's items (the agent, too, acks
				// what it has stored together in one request).
				if len(taken) == 0 {
					continue
				}
				failed, err := rc.AckMany(ctx, taken)
				if err != nil {
					continue
				}
				// An item whose lease ran out (a stall) is not acked
				// here; it comes again and is counted then.
				notices.Add(ackedOf(noticeIDs, failed))
				if n := ackedOf(msgs, failed); n > 0 && acked.Add(n) == total {
					close(recvDone)
				}
			}
		}()
	}

	var (
		mu   sync.Mutex
		lats []time.Duration
		next atomic.Int64
		wg   sync.WaitGroup
	)
	// Senders connect and fetch their access tokens (an RSA signature
	// each) before the clock starts, as long-running agents have.
	clients := make([]*client.Client, benchWorkers())
	for w := range clients {
		clients[w] = e.Client(senders[w%len(senders)])
		if _, err := clients[w].Token(ctx); err != nil {
			b.Fatal(err)
		}
	}
	rate := benchRate()
	b.ResetTimer()
	ws0, _ := e.Srv.StoreStats()
	conns0 := metricstest.Scrape(b, "http://"+e.Srv.MetricsAddr().String())["kurer_gateway_connections_opened_total"]
	start, cpu0 := time.Now(), processCPU()
	tmpls := make([]api.Routing, len(clients))
	sent := make([]atomic.Int64, len(clients))
	for w := range clients {
		// The digest of the (same) body once per client: an agent
		// computes it while sealing, on its own machine.
		tmpls[w] = e.Routing(senders[w%len(senders)], receivers[0], body)
	}
	submit := func(w int, t0 time.Time) bool {
		r := tmpls[w]
		r.ID = uuid.Must(uuid.NewV7()).String() // as agents make them
		if many {
			// To each of the other accounts in turn.
			from := w % len(senders)
			k := int(sent[w].Add(1)) % (len(receivers) - 1)
			r.To = e.IDs[receivers[(from+1+k)%len(receivers)]]
		}
		if _, err := clients[w].Submit(ctx, r, bytes.NewReader(body)); err != nil {
			b.Error(err)
			return false
		}
		d := time.Since(t0)
		mu.Lock()
		lats = append(lats, d)
		mu.Unlock()
		return true
	}
	if rate > 0 {
		// Open loop, as many agents send: message i is sent when it is
		// due (start + i/rate) whether or not earlier ones have been
		// answered, and its latency counts from then. A closed loop of
		// a few senders would stop sending during a stall of the disk
		// and then catch up only as fast as those few can, which
		// measures the load generator, not the gateway.
		sem := make(chan struct{}, maxInFlight)
		for i := range total {
			t0 := start.Add(time.Duration(float64(i) / rate * float64(time.Second)))
			time.Sleep(time.Until(t0))
			sem <- struct{}{}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				submit(int(i)%len(clients), t0)
			}()
		}
	} else {
		// Closed loop: each sender submits its next message when the
		// last one is answered, as fast as the gateway takes them.
		for w := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for next.Add(1) <= total {
					if !submit(w, time.Now()) {
						return
					}
				}
			}()
		}
	}
	wg.Wait()
	select {
	case <-recvDone:
	case <-time.After(2 * time.Minute):
		b.Fatalf("only %d of %d acked", acked.Load(), total)
	}
	el, cpu := time.Since(start), processCPU()-cpu0
	b.StopTimer()
	b.ReportMetric(float64(total)/el.Seconds(), "msgs/s")
	if many {
		b.ReportMetric(float64(notices.Load())/float64(total), "notices-acked/msg")
	}
	// Polls that brought items, each followed by one ack request: how
	// well the receivers' requests are shared between messages.
	b.ReportMetric(float64(polls.Load())/float64(total), "polls/msg")
	if cpu > 0 { // gateway and load generator together, on this machine's cores
		b.ReportMetric(float64(cpu.Microseconds())/1000/float64(total), "cpu-ms/msg")
		b.ReportMetric(cpu.Seconds()/el.Seconds(), "cores-busy")
	}
	if ws, ok := e.Srv.StoreStats(); ok && ws.Commits > ws0.Commits {
		// The store's one serial stage: busy share of the run, and how
		// many updates a commit (two fsyncs) carried.
		b.ReportMetric((ws.Busy-ws0.Busy).Seconds()/el.Seconds(), "writer-busy")
		b.ReportMetric(float64(ws.Updates-ws0.Updates)/float64(ws.Commits-ws0.Commits), "updates/commit")
		b.ReportMetric(float64((ws.Busy-ws0.Busy).Microseconds())/1000/float64(ws.Commits-ws0.Commits), "ms/commit")
		b.ReportMetric(float64(ws.Commits-ws0.Commits)/float64(total), "commits/msg")
		// What a commit costs: pages written, and the time writing them
		// plus the two fsyncs (the rest of ms/commit is running the updates).
		// (bbolt's page is the OS page for a new database.)
		b.ReportMetric(float64(ws.Bytes-ws0.Bytes)/float64(os.Getpagesize())/float64(ws.Commits-ws0.Commits), "pages/commit")
		b.ReportMetric(float64((ws.Write-ws0.Write).Microseconds())/1000/float64(ws.Commits-ws0.Commits), "write-ms/commit")
	}
	// Connections the clients opened during the run: each a TLS
	// handshake. Agents keep theirs, so this stays near zero unless a burst
	// outgrows the clients' kept connections.
	conns := metricstest.Scrape(b, "http://"+e.Srv.MetricsAddr().String())["kurer_gateway_connections_opened_total"]
	b.ReportMetric(conns-conns0, "conns-opened")
	if len(lats) > 0 {
		sortDurations(lats)
		b.ReportMetric(float64(lats[len(lats)*99/100].Microseconds())/1000, "p99-accept-ms")
		b.ReportMetric(float64(lats[len(lats)/2].Microseconds())/1000, "p50-accept-ms")
	}
}

// ackedOf counts the ids of an ack request that are not among its failed.
func ackedOf(ids []string, failed map[string]error) int64 {
	var n int64
	for _, id := range ids {
		if _, bad := failed[id]; !bad {
			n++
		}
	}
	return n
}

func createTemp(dir string) (*os.File, error) { return os.CreateTemp(dir, "dl") }

func sortDurations(d []time.Duration) { slices.Sort(d) }

// maxInFlight bounds the submits in flight in the open-loop (paced) mode:
// far above what a paced run needs, it only keeps a gateway that stopped
// answering from growing the load generator without bound.
const maxInFlight = 1024

// benchRate is the offered load in messages/s (KURER_BENCH_RATE; default
// 0: as fast as the senders go). With a rate, the senders pace the
// submits and the accept latency is measured from each one's due time.
func benchRate() float64 {
	if r, err := strconv.ParseFloat(os.Getenv("KURER_BENCH_RATE"), 64); err == nil && r > 0 {
		return r
	}
	return 0
}

// benchAccounts is KURER_BENCH_ACCOUNTS: 0 (default) for two sending
// accounts and one receiving, else that many accounts that both send and
// receive.
func benchAccounts() int {
	n, _ := strconv.Atoi(os.Getenv("KURER_BENCH_ACCOUNTS"))
	return n
}

// benchWorkers is the number of sending and of receiving workers
// (KURER_BENCH_WORKERS, default 16).
func benchWorkers() int {
	if n, err := strconv.Atoi(os.Getenv("KURER_BENCH_WORKERS")); err == nil && n > 0 {
		return n
	}
	return 16
}
