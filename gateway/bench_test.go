package gateway_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/kurer/kurer/gateway"
	"github.com/kurer/kurer/gateway/client"
	"github.com/kurer/kurer/gateway/gatewaytest"
	"github.com/kurer/kurer/internal/boltdb"
	"github.com/kurer/kurer/internal/gwload"
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
	// The runtime settings `kurer gateway serve` makes by default, unless
	// the environment sets them (for A/B runs).
	defer gateway.SetRuntime(gateway.Config{})()
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
	accounts := func(names []string) []gwload.Account {
		var as []gwload.Account
		for _, n := range names {
			as = append(as, gwload.Account{ID: e.IDs[n], NewClient: func(inline int64) (*client.Client, error) {
				return e.ClientWith(n, func(c *client.Config) { c.PollInline = inline }), nil
			}})
		}
		return as
	}
	var (
		ws0         boltdb.Stats
		conns0      float64
		cpu0        time.Duration
		metricsAddr = "http://" + e.Srv.MetricsAddr().String()
	)
	res, err := gwload.Run(context.Background(), gwload.Config{
		Senders: accounts(senders), Receivers: accounts(receivers),
		Workers: benchWorkers(), Messages: b.N, Rate: benchRate(),
		Body: gatewaytest.RandBytes(10 << 10), Type: gatewaytest.MessageType,
		DownloadDir: b.TempDir(), Now: e.Clock.Now,
		Started: func() {
			b.ResetTimer()
			ws0, _ = e.Srv.StoreStats()
			conns0 = metricstest.Scrape(b, metricsAddr)["kurer_gateway_connections_opened_total"]
			cpu0 = processCPU()
		},
	})
	if err != nil {
		b.Fatal(err)
	}
	el, cpu, total := res.Elapsed, processCPU()-cpu0, int64(res.Messages)
	b.StopTimer()
	b.ReportMetric(res.PerSec, "msgs/s")
	if len(receivers) > 1 {
		b.ReportMetric(float64(res.NoticesAcked)/float64(total), "notices-acked/msg")
	}
	// Polls that brought items, each followed by one ack request: how
	// well the receivers' requests are shared between messages.
	b.ReportMetric(float64(res.Polls)/float64(total), "polls/msg")
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
	conns := metricstest.Scrape(b, metricsAddr)["kurer_gateway_connections_opened_total"]
	b.ReportMetric(conns-conns0, "conns-opened")
	b.ReportMetric(float64(res.Percentile(0.99).Microseconds())/1000, "p99-accept-ms")
	b.ReportMetric(float64(res.Percentile(0.50).Microseconds())/1000, "p50-accept-ms")
}

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
