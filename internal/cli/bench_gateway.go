package cli

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/kurer/kurer/gateway"
	gwclient "github.com/kurer/kurer/gateway/client"
	"github.com/kurer/kurer/internal/boltdb"
	"github.com/kurer/kurer/internal/gwload"
	"github.com/kurer/kurer/internal/pki"
)

// The embedded gateway's targets (issue #3): messages/s with many agents,
// and the p99 accept latency at half that load.
const (
	gatewayTargetRate  = 2000
	gatewayTargetP99ms = 50
)

type benchGatewayOptions struct {
	json     bool
	accounts int
	workers  int
	messages int
	dir      string
}

func (o *benchGatewayOptions) flags(cmd *cobra.Command, prefix string) {
	f := cmd.Flags()
	f.IntVar(&o.accounts, prefix+"accounts", 16, "agents (accounts) that each send to the others and receive")
	f.IntVar(&o.workers, prefix+"workers", 64, "sending and receiving workers each, shared out over the accounts (an agent uploads 4 at a time)")
	f.IntVar(&o.messages, prefix+"messages", 20000, "messages in the peak round (half as many at half rate)")
}

func (o *benchGatewayOptions) check(prefix string) error {
	if o.accounts < 2 || o.workers < o.accounts || o.messages < o.workers {
		return exitf(ExitUsage, "bench: --%saccounts >= 2, --%sworkers >= accounts and --%smessages >= workers", prefix, prefix, prefix)
	}
	return nil
}

func newBenchGatewayCommand() *cobra.Command {
	o := &benchGatewayOptions{}
	cmd := &cobra.Command{
		Use:   "gateway",
		Short: "Measure the embedded gateway with many agents' traffic",
		Long: `Measure the embedded gateway alone: --accounts agents each submit
10 KiB envelopes to the others (every accept fsynced, signed receipt back),
long-poll their mailboxes with small envelopes inline, and ack the
messages and the gateway's notices (accepted, delivered), as agents do. Sealing and
opening are not part of it: agents do that on their own machines.

Runs the gateway and the load in this process (real TLS on 127.0.0.1, the
bbolt store fsynced on disk in --dir): first as fast as it goes (peak
messages/s of accepted+delivered+acked, and the accept latency), then an
open loop at half the peak for the p99 accept latency there.`,
		Example: `  kurer bench gateway
  kurer bench gateway --json --accounts 32 --messages 50000`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) (err error) {
			if err := o.check(""); err != nil {
				return err
			}
			dir, cleanup, err := benchDir(o.dir, "kurer-bench-gateway-")
			if err != nil {
				return err
			}
			defer cleanup(&err)
			m := thisMachine()
			res, err := benchGateway(cmd.Context(), dir, o, cmd.ErrOrStderr())
			if err != nil {
				return fmt.Errorf("bench gateway: %w", err)
			}
			out := cmd.OutOrStdout()
			if o.json {
				return writeJSON(out, struct {
					Date    time.Time           `json:"date"`
					Machine benchMachine        `json:"machine"`
					Gateway *gatewayBenchResult `json:"gateway"`
				}{time.Now().UTC(), m, res})
			}
			fmt.Fprintf(out, "kurer bench gateway  %s  %d CPUs (%s), %s RAM, %s\n\n", time.Now().UTC().Format(time.RFC3339), m.CPUs, m.CPU, humanBytes(m.MemBytes&^(1<<20-1)), m.Go)
			printGatewayBench(out, res)
			return nil
		},
	}
	cmd.Flags().BoolVar(&o.json, "json", false, "print one JSON object instead of text")
	cmd.Flags().StringVar(&o.dir, "dir", "", "work directory (default: a temporary one, removed afterwards)")
	o.flags(cmd, "")
	return cmd
}

// benchDir returns dir (absolute), or a new temporary directory and a
// cleanup that removes it, setting *err if that fails and *err is nil.
func benchDir(dir, pattern string) (string, func(err *error), error) {
	if dir != "" {
		abs, err := filepath.Abs(dir)
		return abs, func(*error) {}, err
	}
	dir, err := os.MkdirTemp("", pattern)
	if err != nil {
		return "", nil, err
	}
	return dir, func(err *error) {
		if rerr := os.RemoveAll(dir); rerr != nil && *err == nil {
			*err = rerr
		}
	}, nil
}

// thisMachine describes the machine a benchmark runs on.
func thisMachine() benchMachine {
	return benchMachine{CPUs: runtime.NumCPU(), CPU: cpuModel(), MemBytes: memTotal(), Go: runtime.Version()}
}

// gatewayBenchResult is the gateway part's figures (JSON as printed by
// --json).
type gatewayBenchResult struct {
	Accounts int `json:"accounts"`
	Workers  int `json:"workers_per_side"`
	Messages int `json:"messages"`
	Size     int `json:"size"`
	// Peak round: messages/s of accepted+delivered+acked, accept latency.
	PerSec float64 `json:"messages_per_sec"`
	P50ms  float64 `json:"accept_p50_ms"`
	P99ms  float64 `json:"accept_p99_ms"`
	// NoticesPerMsg: notices acked per message (2: every sender learned
	// of every accept and delivery through its mailbox).
	NoticesPerMsg float64 `json:"notices_acked_per_message"`
	// CPUmsPerMsg: this process's CPU (gateway and load together) per
	// message in the peak round (Linux only).
	CPUmsPerMsg float64 `json:"cpu_ms_per_message,omitempty"`
	// The store's one writer in the peak round: the share of the time it
	// was busy, and the 4 KiB pages it wrote per message.
	WriterBusy   float64 `json:"writer_busy"`
	PagesPerMsg  float64 `json:"pages_per_message"`
	CommitsPerS  float64 `json:"commits_per_sec"`
	HalfRate     float64 `json:"half_rate_per_sec"`
	HalfReached  float64 `json:"half_rate_reached_per_sec"`
	HalfP50ms    float64 `json:"half_rate_accept_p50_ms"`
	HalfP99ms    float64 `json:"half_rate_accept_p99_ms"`
	TargetRate   bool    `json:"target_rate_met"` // >= 2000/s
	TargetP99    bool    `json:"target_p99_met"`  // <= 50 ms at half rate
	RuntimeProcs int     `json:"gomaxprocs"`
}

func printGatewayBench(out io.Writer, g *gatewayBenchResult) {
	fmt.Fprintf(out, "gateway (embedded, in-process: real TLS on 127.0.0.1, bbolt fsynced on disk; %d agents, %d senders and %d pollers, %d x %s; sealing not included)\n",
		g.Accounts, g.Workers, g.Workers, g.Messages, humanBytes(int64(g.Size)))
	fmt.Fprintf(out, "  peak        %8.0f messages/s accepted+delivered+acked   accept p50 %6.1f ms   p99 %6.1f ms   (target >= %d/s: %s)\n",
		g.PerSec, g.P50ms, g.P99ms, gatewayTargetRate, metWord(g.TargetRate))
	fmt.Fprintf(out, "  half rate   %8.0f messages/s (offered %.0f/s)             accept p50 %6.1f ms   p99 %6.1f ms   (target p99 <= %d ms: %s)\n",
		g.HalfReached, g.HalfRate, g.HalfP50ms, g.HalfP99ms, gatewayTargetP99ms, metWord(g.TargetP99))
	if g.CPUmsPerMsg > 0 {
		fmt.Fprintf(out, "  CPU         %8.2f ms per message at peak (gateway and load generator in this process, GOMAXPROCS %d)\n", g.CPUmsPerMsg, g.RuntimeProcs)
	}
	fmt.Fprintf(out, "  store       writer %.0f %% busy, %.0f commits/s, %.1f pages per message; %.2f notices (accepted, delivered) acked per message\n",
		100*g.WriterBusy, g.CommitsPerS, g.PagesPerMsg, g.NoticesPerMsg)
}

// benchGateway runs the gateway part in dir.
func benchGateway(ctx context.Context, dir string, o *benchGatewayOptions, progress io.Writer) (*gatewayBenchResult, error) {
	fmt.Fprintf(progress, "bench gateway: %d agents, %d+%d workers, %d messages ...\n", o.accounts, o.workers, o.workers, o.messages)
	pkiDir := filepath.Join(dir, "pki")
	names := make([]string, o.accounts)
	for i := range names {
		names[i] = fmt.Sprintf("agent%02d", i+1)
	}
	if err := runDevCerts(io.Discard, devCertsOptions{out: pkiDir, accounts: names, keyType: string(pki.RSA3072)}); err != nil {
		return nil, err
	}
	// The runtime settings `kurer gateway serve` makes by default.
	defer gateway.SetRuntime(gateway.Config{})()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	gw, ids, err := startBenchGateway(ctx, runCtx, &wg, dir, pkiDir, names, logger)
	if err != nil {
		return nil, err
	}
	caPEM, err := os.ReadFile(filepath.Join(pkiDir, "ca.pem"))
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	accounts := make([]gwload.Account, len(names))
	for i, n := range names {
		key, err := pki.LoadKey(filepath.Join(pkiDir, n+".key"))
		if err != nil {
			return nil, err
		}
		cert, err := pki.LoadCert(filepath.Join(pkiDir, n+".pem"))
		if err != nil {
			return nil, err
		}
		accounts[i] = gwload.Account{ID: ids[i], NewClient: func(inline int64) (*gwclient.Client, error) {
			return gwclient.New(gwclient.Config{
				BaseURL: "https://" + gw.Addr().String(), AccountID: ids[i], Signer: key, Cert: cert,
				TLS: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}, Audience: benchAudience,
				MaxRetries: 3, PollInline: inline,
			})
		}}
	}
	body := make([]byte, 10<<10)
	for i := range body {
		body[i] = byte(i*7 + i>>8) // ciphertext stand-in: the gateway only stores and hashes it
	}
	cfg := gwload.Config{
		Senders: accounts, Receivers: accounts, Workers: o.workers, Type: benchType,
		Body: body, DownloadDir: dir,
	}
	res := &gatewayBenchResult{Accounts: o.accounts, Workers: o.workers, Messages: o.messages, Size: len(body), RuntimeProcs: runtime.GOMAXPROCS(0)}

	// Warm-up: every worker's connection and token, a message each.
	cfg.Messages = o.workers
	if _, err := gwload.Run(ctx, cfg); err != nil {
		return nil, fmt.Errorf("warm-up: %w", err)
	}

	var (
		ws0  boltdb.Stats
		cpu0 time.Duration
	)
	cfg.Messages = o.messages
	cfg.Started = func() { ws0, _ = gw.StoreStats(); cpu0 = processCPU() }
	peak, err := gwload.Run(ctx, cfg)
	if err != nil {
		return nil, err
	}
	cpu := processCPU() - cpu0
	ws, _ := gw.StoreStats()
	res.PerSec = peak.PerSec
	res.P50ms, res.P99ms = ms(peak.Percentile(0.50)), ms(peak.Percentile(0.99))
	res.NoticesPerMsg = float64(peak.NoticesAcked) / float64(peak.Messages)
	if cpu > 0 {
		res.CPUmsPerMsg = float64(cpu.Microseconds()) / 1000 / float64(peak.Messages)
	}
	res.WriterBusy = (ws.Busy - ws0.Busy).Seconds() / peak.Elapsed.Seconds()
	res.PagesPerMsg = float64(ws.Bytes-ws0.Bytes) / float64(os.Getpagesize()) / float64(peak.Messages)
	res.CommitsPerS = float64(ws.Commits-ws0.Commits) / peak.Elapsed.Seconds()
	fmt.Fprintf(progress, "  peak %.0f/s, accept p99 %.1f ms; now at half rate ...\n", res.PerSec, res.P99ms)

	res.HalfRate = res.PerSec / 2
	cfg.Rate, cfg.Messages, cfg.Started = res.HalfRate, max(o.messages/2, o.workers), nil
	half, err := gwload.Run(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("half rate: %w", err)
	}
	res.HalfReached = half.PerSec
	res.HalfP50ms, res.HalfP99ms = ms(half.Percentile(0.50)), ms(half.Percentile(0.99))
	res.TargetRate = res.PerSec >= gatewayTargetRate
	res.TargetP99 = res.HalfP99ms <= gatewayTargetP99ms
	return res, nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
