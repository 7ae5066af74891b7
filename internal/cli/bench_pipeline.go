package cli

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"

	"github.com/kurer/kurer/agent"
	"github.com/kurer/kurer/agent/localapi"
	"github.com/kurer/kurer/gateway"
	"github.com/kurer/kurer/gateway/api"
	gwclient "github.com/kurer/kurer/gateway/client"
	"github.com/kurer/kurer/internal/durable"
	"github.com/kurer/kurer/internal/errs"
	"github.com/kurer/kurer/internal/pki"
)

type benchPipelineOptions struct {
	json       bool
	agents     int
	messages   int
	large      string
	dir        string
	openssl    string
	cpuProfile string
	skipLarge  bool
	// The gateway part: the embedded gateway alone with many agents'
	// traffic (`kurer bench gateway`).
	gateway     benchGatewayOptions
	skipGateway bool
}

func newBenchPipelineCommand() *cobra.Command {
	o := &benchPipelineOptions{}
	cmd := &cobra.Command{
		Use:   "pipeline",
		Short: "Measure end-to-end throughput, latency, and a large file against standard tools",
		Long: `Measure the whole pipeline, one part after the other:

 0. Gateway: the embedded gateway alone, as ` + "`kurer bench gateway`" + `
    measures it: --gateway-accounts agents' API traffic (submit, long-poll
    with small envelopes inline, batch acks of messages and notices), peak
    messages/s and the p99 accept latency at half that rate. Sealing and
    opening are not part of it.

 1. Throughput: --agents sending agents send 10 KiB cases through one
    gateway to --agents receiving agents; every message durable, every
    mottatt receipt back and verified. Reports messages/s and p50/p99 latency
    (queued at the sender -> receipt verified at the sender), then runs again
    at half that rate and reports p99 there. The gateway and agents run
    in-process here (real TLS on 127.0.0.1, real bbolt stores on disk).

 2. Large file: one --large case end to end with real processes (kurer
    gateway serve, two kurer agent run, the folder adapter), wall time and
    each process's peak RSS (VmHWM), against openssl cms -encrypt + HTTP PUT
    to a plain Go file server + GET + openssl cms -decrypt on the same bytes.

Needs openssl in PATH, and disk for about 5x --large in --dir.`,
		Example: `  kurer bench pipeline
  kurer bench pipeline --json --agents 4 --messages 4000 --large 1GiB`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return o.run(cmd) },
	}
	f := cmd.Flags()
	f.BoolVar(&o.json, "json", false, "print one JSON object instead of text")
	f.IntVar(&o.agents, "agents", 4, "sending agents (and as many receiving agents)")
	f.IntVar(&o.messages, "messages", 2000, "messages in the throughput run")
	f.StringVar(&o.large, "large", "1GiB", "size of the large case")
	f.BoolVar(&o.skipLarge, "skip-large", false, "skip the large-file part")
	f.BoolVar(&o.skipGateway, "skip-gateway", false, "skip the gateway part")
	o.gateway.flags(cmd, "gateway-")
	f.StringVar(&o.dir, "dir", "", "work directory (default: a temporary one, removed afterwards)")
	f.StringVar(&o.openssl, "openssl", "openssl", "openssl binary for the baseline")
	f.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the throughput part to this file")
	return cmd
}

// pipelineResult is what --json prints.
type pipelineResult struct {
	Date       time.Time           `json:"date"`
	Machine    benchMachine        `json:"machine"`
	Gateway    *gatewayBenchResult `json:"gateway,omitempty"`
	Throughput *throughputResult   `json:"throughput"`
	Large      *largeResult        `json:"large,omitempty"`
}

type benchMachine struct {
	CPUs     int    `json:"cpus"`
	CPU      string `json:"cpu"`
	MemBytes int64  `json:"mem_bytes"`
	Go       string `json:"go"`
}

type throughputResult struct {
	InProcess   bool    `json:"in_process"`
	Agents      int     `json:"agents"`
	Messages    int     `json:"messages"`
	Size        int     `json:"size"`
	PerSec      float64 `json:"messages_per_sec"`
	P50ms       float64 `json:"p50_ms"`
	P99ms       float64 `json:"p99_ms"`
	HalfRate    float64 `json:"half_rate_per_sec"`
	HalfP50ms   float64 `json:"half_rate_p50_ms"`
	HalfP99ms   float64 `json:"half_rate_p99_ms"`
	TargetRate  bool    `json:"target_rate_met"` // >= 2000/s
	TargetP99   bool    `json:"target_p99_met"`  // <= 100 ms at half rate
	CPUProfile  string  `json:"cpu_profile,omitempty"`
	HalfReached float64 `json:"half_rate_reached_per_sec"`
	// CPUmsPerMsg is the process's CPU time in the peak round per message
	// (gateway, agents and load generator together; Linux only).
	CPUmsPerMsg float64 `json:"cpu_ms_per_message,omitempty"`
	// RSAPrivateOpMs is the median time of one private-key operation with
	// the agents' RSA-3072 key on this machine; a message costs four (the
	// case and its receipt are each signed once and opened once), so
	// CryptoCeiling = CPUs / (4 x RSAPrivateOpMs) is the most messages/s the
	// keys allow before any I/O.
	RSAPrivateOpMs float64 `json:"rsa_private_op_ms"`
	CryptoCeiling  float64 `json:"crypto_ceiling_per_sec"`
}

type largeResult struct {
	Size         int64              `json:"size"`
	KurerSeconds float64            `json:"kurer_seconds"`
	BaseSeconds  float64            `json:"baseline_seconds"`
	Ratio        float64            `json:"ratio"`
	PeakRSSKiB   map[string]int64   `json:"peak_rss_kib"`
	TargetRatio  bool               `json:"target_ratio_met"` // <= 1.3
	TargetRSS    bool               `json:"target_rss_met"`   // <= 64 MiB each
	Baseline     map[string]float64 `json:"baseline_steps_seconds"`
}

func (o *benchPipelineOptions) run(cmd *cobra.Command) (err error) {
	ctx := cmd.Context()
	if o.agents < 1 || o.messages < o.agents {
		return exitf(ExitUsage, "bench pipeline: --agents >= 1 and --messages >= --agents")
	}
	large, err := parseSize(o.large)
	if err != nil {
		return exitf(ExitUsage, "bench pipeline: --large: %v", err)
	}
	meta, err := benchMetadataBase()
	if err != nil {
		return exitf(ExitUsage, "bench pipeline: %v (run it from the repository)", err)
	}
	if !o.skipGateway {
		if err := o.gateway.check("gateway-"); err != nil {
			return err
		}
	}
	dir, cleanup, err := benchDir(o.dir, "kurer-bench-pipeline-")
	if err != nil {
		return err
	}
	defer cleanup(&err)
	res := pipelineResult{Date: time.Now().UTC(), Machine: thisMachine()}
	out := cmd.OutOrStdout()
	progress := cmd.ErrOrStderr()

	if !o.skipGateway {
		res.Gateway, err = benchGateway(ctx, filepath.Join(dir, "gw"), &o.gateway, progress)
		if err != nil {
			return fmt.Errorf("bench pipeline: gateway: %w", err)
		}
	}
	fmt.Fprintf(progress, "bench pipeline: throughput, %d+%d agents, %d messages ...\n", o.agents, o.agents, o.messages)
	res.Throughput, err = benchThroughput(ctx, filepath.Join(dir, "tp"), o, meta, progress)
	if err != nil {
		return fmt.Errorf("bench pipeline: throughput: %w", err)
	}
	if !o.skipLarge {
		fmt.Fprintf(progress, "bench pipeline: large file, %s ...\n", humanBytes(large))
		res.Large, err = benchLarge(ctx, filepath.Join(dir, "large"), o, meta, large, progress)
		if err != nil {
			return fmt.Errorf("bench pipeline: large: %w", err)
		}
	}
	if o.json {
		return writeJSON(out, res)
	}
	t := res.Throughput
	fmt.Fprintf(out, "kurer bench pipeline  %s  %d CPUs (%s), %s RAM, %s\n\n", res.Date.Format(time.RFC3339), res.Machine.CPUs, res.Machine.CPU, humanBytes(res.Machine.MemBytes&^(1<<20-1)), res.Machine.Go)
	if res.Gateway != nil {
		printGatewayBench(out, res.Gateway)
		fmt.Fprintln(out)
	}
	fmt.Fprintf(out, "throughput (in-process gateway and agents, real TLS and bbolt on disk; %d senders -> %d receivers, %d x %s, durable, mottatt receipts verified)\n", t.Agents, t.Agents, t.Messages, humanBytes(int64(t.Size)))
	fmt.Fprintf(out, "  peak        %8.0f messages/s   p50 %6.1f ms   p99 %6.1f ms   (target >= 2000/s: %s)\n", t.PerSec, t.P50ms, t.P99ms, metWord(t.TargetRate))
	fmt.Fprintf(out, "  half rate   %8.0f messages/s   p50 %6.1f ms   p99 %6.1f ms   (offered %.0f/s; target p99 <= 100 ms: %s)\n", t.HalfReached, t.HalfP50ms, t.HalfP99ms, t.HalfRate, metWord(t.TargetP99))
	if t.CPUmsPerMsg > 0 {
		fmt.Fprintf(out, "  CPU         %8.1f ms per message at peak (all parts in this process)\n", t.CPUmsPerMsg)
	}
	fmt.Fprintf(out, "  RSA-3072 private-key operation %.2f ms here; 4 per message -> crypto ceiling %.0f messages/s on %d CPUs before any I/O\n",
		t.RSAPrivateOpMs, t.CryptoCeiling, res.Machine.CPUs)
	if t.CPUProfile != "" {
		fmt.Fprintf(out, "  CPU profile %s (go tool pprof -top %s)\n", t.CPUProfile, t.CPUProfile)
	}
	if l := res.Large; l != nil {
		fmt.Fprintf(out, "\nlarge file %s (real processes: gateway, two agents, folder adapter)\n", humanBytes(l.Size))
		fmt.Fprintf(out, "  kurer     %7.1f s   (local API send -> in the receiver's inbox folder and mottatt verified at the sender)\n", l.KurerSeconds)
		fmt.Fprintf(out, "  baseline  %7.1f s   (openssl cms -encrypt %.1f s, PUT %.1f s, GET %.1f s, openssl cms -decrypt %.1f s)\n", l.BaseSeconds,
			l.Baseline["encrypt"], l.Baseline["put"], l.Baseline["get"], l.Baseline["decrypt"])
		fmt.Fprintf(out, "  ratio     %7.2f     (target <= 1.3: %s)\n", l.Ratio, metWord(l.TargetRatio))
		names := make([]string, 0, len(l.PeakRSSKiB))
		for n := range l.PeakRSSKiB {
			names = append(names, n)
		}
		slices.Sort(names)
		for _, n := range names {
			fmt.Fprintf(out, "  peak RSS  %-9s %6.1f MiB\n", n, float64(l.PeakRSSKiB[n])/1024)
		}
		fmt.Fprintf(out, "  (target <= 64 MiB each: %s)\n", metWord(l.TargetRSS))
	}
	return nil
}

func memTotal() int64 {
	data, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n << 10
		}
	}
	return 0
}

// benchMetadataBase is the example case's melding.json, parsed; each
// message gets its own document list.
func benchMetadataBase() (map[string]any, error) {
	p, err := findUp(filepath.Join("examples", "cases", "sak-overforing", localapi.MetadataFile))
	if err != nil {
		return nil, err
	}
	data, err := durable.ReadFile(p, maxMetadataSize)
	if err != nil {
		return nil, err
	}
	var doc map[string]any
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, err
	}
	return doc, nil
}

// benchMetadata is base with one document, name.
func benchMetadata(base map[string]any, name string) []byte {
	doc := make(map[string]any, len(base))
	for k, v := range base {
		doc[k] = v
	}
	doc["dokumenter"] = []any{map[string]any{"fil": name, "tittel": "Dokument", "dato": "2026-10-28", "kategori": "referat", "sett_av_familien": false}}
	out, _ := json.Marshal(doc)
	return out
}

// benchOrgNumbers returns n valid (mod-11) synthetic organisation numbers.
func benchOrgNumbers(n int) []string {
	var out []string
	w := []int{3, 2, 7, 6, 5, 4, 3, 2}
	for base := 31100000; len(out) < n; base++ {
		s := strconv.Itoa(base)
		sum := 0
		for i := range 8 {
			sum += int(s[i]-'0') * w[i]
		}
		c := 11 - sum%11
		if c == 11 {
			c = 0
		}
		if c == 10 {
			continue
		}
		out = append(out, s+strconv.Itoa(c))
	}
	return out
}

const benchType = "no.kurer.barnevern.sak.overforing.v1"

var benchAccountTypes = []string{benchType, "no.kurer.kvittering.mottatt.v1", "no.kurer.kvittering.avvist.v1", "no.kurer.kvittering.behandlet.v1"}

// benchAdmin returns an admin client for a gateway's admin API.
func benchAdmin(pkiDir, adminURL, token string) (*gwclient.Admin, error) {
	caPEM, err := os.ReadFile(filepath.Join(pkiDir, "ca.pem"))
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	return gwclient.NewAdmin(gwclient.AdminConfig{BaseURL: adminURL, Token: token, TLS: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}})
}

// benchRegister adds accounts named names (certificates in pkiDir) and
// returns their ids.
func benchRegister(ctx context.Context, admin *gwclient.Admin, pkiDir string, names []string) ([]string, error) {
	orgs := benchOrgNumbers(len(names))
	var ids []string
	for i, n := range names {
		certPEM, err := os.ReadFile(filepath.Join(pkiDir, n+".pem"))
		if err != nil {
			return nil, err
		}
		var acct api.Account
		for {
			acct, err = admin.CreateAccount(ctx, api.AccountRequest{Name: "bench " + n, OrgNumber: orgs[i],
				Service: "barneverntjenesten", Types: benchAccountTypes, Certificates: []string{string(certPEM)}})
			if err == nil || ctx.Err() != nil {
				break
			}
			if errs.CodeOf(err) != errs.Unavailable {
				return nil, fmt.Errorf("account %s: %w", n, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err != nil {
			return nil, fmt.Errorf("account %s: %w", n, err)
		}
		ids = append(ids, acct.ID)
	}
	return ids, nil
}

func benchToken() (token, sum string) {
	token = randomToken()
	s := sha256.Sum256([]byte(token))
	return token, hex.EncodeToString(s[:])
}

// benchAudience is the audience of the bench gateways.
const benchAudience = "https://kurer-bench.invalid"

// startBenchGateway starts an embedded gateway in dir/gateway (dev PKI in
// pkiDir, as runDevCerts made it) that runs until runCtx ends (wg waits for
// it), and registers an account for each of names; it returns the gateway
// and the accounts' ids.
func startBenchGateway(ctx, runCtx context.Context, wg *sync.WaitGroup, dir, pkiDir string, names []string, logger *slog.Logger) (*gateway.Server, []string, error) {
	opToken, opSum := benchToken()
	gw, err := gateway.New(gateway.Config{
		ID: "kurer-bench", Audience: benchAudience, Listen: "127.0.0.1:0", AdminListen: "127.0.0.1:0", MetricsListen: "127.0.0.1:0",
		TLSCert: filepath.Join(pkiDir, "gateway.pem"), TLSKey: filepath.Join(pkiDir, "gateway.key"),
		TrustRoots: []string{filepath.Join(pkiDir, "ca.pem")}, SigningKey: filepath.Join(pkiDir, "gateway-signing.key"),
		OperatorTokenSHA256: opSum, DataDir: filepath.Join(dir, "gateway"), Dev: true,
	}, logger)
	if err != nil {
		return nil, nil, err
	}
	wg.Add(1)
	go func() { defer wg.Done(); _ = gw.Run(runCtx) }()
	admin, err := benchAdmin(pkiDir, "https://"+gw.AdminAddr().String(), opToken)
	if err != nil {
		return nil, nil, err
	}
	rctx, rcancel := context.WithTimeout(ctx, 30*time.Second)
	defer rcancel()
	ids, err := benchRegister(rctx, admin, pkiDir, names)
	if err != nil {
		return nil, nil, err
	}
	return gw, ids, nil
}

// benchThroughput runs the in-process throughput part.
func benchThroughput(ctx context.Context, dir string, o *benchPipelineOptions, meta map[string]any, progress io.Writer) (*throughputResult, error) {
	pkiDir := filepath.Join(dir, "pki")
	var names []string
	for i := range o.agents {
		names = append(names, fmt.Sprintf("s%d", i), fmt.Sprintf("r%d", i))
	}
	if err := runDevCerts(io.Discard, devCertsOptions{out: pkiDir, accounts: names, keyType: string(pki.RSA3072)}); err != nil {
		return nil, err
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	gw, ids, err := startBenchGateway(ctx, runCtx, &wg, dir, pkiDir, names, logger)
	if err != nil {
		return nil, err
	}
	clients := make([]*localapi.Client, len(names))
	for i, n := range names {
		token := randomToken()
		tf := filepath.Join(dir, n+".token")
		if err := os.WriteFile(tf, []byte(token+"\n"), 0o600); err != nil {
			return nil, err
		}
		a, err := agent.New(agent.Config{
			Account: ids[i], DataDir: filepath.Join(dir, n), Dev: true,
			Gateway:    agent.GatewayConfig{URL: "https://" + gw.Addr().String(), CAFile: filepath.Join(pkiDir, "ca.pem"), Audience: benchAudience},
			Keys:       []agent.KeyConfig{{Cert: filepath.Join(pkiDir, n+".pem"), Key: filepath.Join(pkiDir, n+".key")}},
			TrustRoots: []string{filepath.Join(pkiDir, "ca.pem")},
			LocalAPI:   agent.LocalAPIConfig{Listen: "127.0.0.1:0", TokenFile: tf},
			Retry:      agent.RetryConfig{Initial: 50 * time.Millisecond, Max: time.Second},
		}, logger)
		if err != nil {
			return nil, fmt.Errorf("agent %s: %w", n, err)
		}
		wg.Add(1)
		go func() { defer wg.Done(); _ = a.Run(runCtx) }()
		hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
		if clients[i], err = localapi.NewClient(a.LocalURL(), token, localapi.WithHTTPClient(hc)); err != nil {
			return nil, err
		}
	}
	for _, c := range clients {
		if err := benchWait(ctx, 30*time.Second, func() bool { return c.Ready(ctx) == nil }); err != nil {
			return nil, fmt.Errorf("agents not ready: %w", err)
		}
	}
	payload := make([]byte, 10<<10)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	md := benchMetadata(meta, "dokumenter/sak.bin")
	send := func(c *localapi.Client, to string) (string, error) {
		r, err := c.Send(ctx, localapi.SendRequest{Type: benchType, To: to, Metadata: md,
			Files: []localapi.SendFile{{Name: "dokumenter/sak.bin", Size: int64(len(payload)),
				Open: func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(string(payload))), nil }}}})
		return r.ID, err
	}
	// Warm-up: one message per pair, end to end.
	if _, _, _, err := benchRound(ctx, clients, ids, o.agents, o.agents, 0, send); err != nil {
		return nil, fmt.Errorf("warm-up: %w", err)
	}
	res := &throughputResult{InProcess: true, Agents: o.agents, Messages: o.messages, Size: len(payload)}
	var stopProf func()
	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			return nil, err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return nil, err
		}
		res.CPUProfile = o.cpuProfile
		stopProf = func() { pprof.StopCPUProfile(); _ = f.Close() }
	}
	cpu0 := processCPU()
	rate, p50, p99, err := benchRound(ctx, clients, ids, o.agents, o.messages, 0, send)
	if cpu := processCPU() - cpu0; cpu > 0 {
		res.CPUmsPerMsg = float64(cpu.Microseconds()) / 1000 / float64(o.messages)
	}
	if stopProf != nil {
		stopProf()
	}
	if err != nil {
		return nil, err
	}
	res.PerSec, res.P50ms, res.P99ms = rate, p50, p99
	fmt.Fprintf(progress, "  peak %.0f/s p50 %.1f ms p99 %.1f ms; now at half rate ...\n", rate, p50, p99)
	res.HalfRate = rate / 2
	half := o.messages / 2
	if half < o.agents {
		half = o.agents
	}
	res.HalfReached, res.HalfP50ms, res.HalfP99ms, err = benchRound(ctx, clients, ids, o.agents, half, res.HalfRate, send)
	if err != nil {
		return nil, err
	}
	res.TargetRate = res.PerSec >= 2000
	res.TargetP99 = res.HalfP99ms <= 100
	if res.RSAPrivateOpMs, err = rsaPrivateOpMs(filepath.Join(pkiDir, names[0]+".key")); err != nil {
		return nil, err
	}
	res.CryptoCeiling = float64(runtime.NumCPU()) / (4 * res.RSAPrivateOpMs / 1000)
	return res, nil
}

// rsaPrivateOpMs times signatures with the key at path (one private-key
// operation each, as an OAEP unwrap is) and returns the median in ms.
func rsaPrivateOpMs(path string) (float64, error) {
	key, err := pki.LoadKey(path)
	if err != nil {
		return 0, err
	}
	sum := sha256.Sum256([]byte("kurer bench"))
	var d []time.Duration
	for range 21 {
		t0 := time.Now()
		if _, err := key.Sign(rand.Reader, sum[:], crypto.SHA256); err != nil {
			return 0, err
		}
		d = append(d, time.Since(t0))
	}
	slices.Sort(d)
	return float64(d[len(d)/2].Microseconds()) / 1000, nil
}

// benchRound sends n messages from the senders (clients[2i]) to their
// receivers (ids[2i+1]), at most rate per second in total (0: as fast as it
// goes, with 16 in flight per sender), waits for every mottatt receipt and
// returns the rate (messages / (last receipt - first queued)) and the p50
// and p99 latency (queued -> received, from the sender's history).
func benchRound(ctx context.Context, clients []*localapi.Client, ids []string, agents, n int, rate float64, send func(*localapi.Client, string) (string, error)) (perSec, p50, p99 float64, err error) {
	type sent struct {
		c  *localapi.Client
		id string
	}
	var (
		mu    sync.Mutex
		all   []sent
		first error
	)
	var next atomic.Int64
	var tick <-chan time.Time
	if rate > 0 {
		t := time.NewTicker(time.Duration(float64(time.Second) / rate))
		defer t.Stop()
		tick = t.C
	}
	var wg sync.WaitGroup
	for range agents {
		for range 16 { // in flight per sender
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					if tick != nil {
						select {
						case <-tick:
						case <-ctx.Done():
							return
						}
					}
					i := next.Add(1) - 1
					if i >= int64(n) {
						return
					}
					c := clients[2*(int(i)%agents)]
					id, err := send(c, ids[2*(int(i)%agents)+1])
					mu.Lock()
					if err != nil && first == nil {
						first = err
					}
					if err == nil {
						all = append(all, sent{c, id})
					}
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	if first != nil {
		return 0, 0, 0, first
	}
	var lat []float64
	var begin, end time.Time
	for _, m := range all {
		var d localapi.MessageDetail
		err := benchWait(ctx, 5*time.Minute, func() bool {
			var err error
			d, err = m.c.Message(ctx, m.id)
			return err == nil && (d.State == localapi.StateReceived || d.State == localapi.StateProcessed || d.State == localapi.StateFailed || d.State == localapi.StateRejected)
		})
		if err != nil || (d.State != localapi.StateReceived && d.State != localapi.StateProcessed) {
			return 0, 0, 0, fmt.Errorf("message %s: state %s: %v", m.id, d.State, err)
		}
		var q, r time.Time
		for _, h := range d.History {
			switch h.State {
			case localapi.StateQueued:
				q = h.At
			case localapi.StateReceived:
				r = h.At
			}
		}
		if q.IsZero() || r.IsZero() {
			return 0, 0, 0, fmt.Errorf("message %s: no queued/received in its history", m.id)
		}
		lat = append(lat, float64(r.Sub(q).Microseconds())/1000)
		if begin.IsZero() || q.Before(begin) {
			begin = q
		}
		if r.After(end) {
			end = r
		}
	}
	slices.Sort(lat)
	pct := func(p float64) float64 { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	return float64(len(all)) / end.Sub(begin).Seconds(), pct(0.50), pct(0.99), nil
}

func benchWait(ctx context.Context, d time.Duration, f func() bool) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	for !f() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	return nil
}

// benchProc is a child kurer process.
type benchProc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
}

func startBenchProc(name, logPath string, args ...string) (*benchProc, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), "KURER_AGENT_TOKEN=")
	if err := cmd.Start(); err != nil {
		_ = f.Close()
		return nil, err
	}
	p := &benchProc{name: name, cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); _ = f.Close(); close(p.done) }()
	return p, nil
}

func (p *benchProc) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func benchPorts(n int) ([]string, error) {
	var out []string
	var lns []net.Listener
	defer func() {
		for _, l := range lns {
			_ = l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, l)
		out = append(out, l.Addr().String())
	}
	return out, nil
}

func writeBenchYAML(path string, v any) error {
	data, err := yaml.Marshal(v)
	if err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o600)
}

// benchLarge runs the large-file part with real processes and the baseline.
func benchLarge(ctx context.Context, dir string, o *benchPipelineOptions, meta map[string]any, size int64, progress io.Writer) (_ *largeResult, err error) {
	ossl, err := exec.LookPath(o.openssl)
	if err != nil {
		return nil, exitf(ExitUsage, "openssl not found (%v): the baseline needs it", err)
	}
	pkiDir := filepath.Join(dir, "pki")
	if err := runDevCerts(io.Discard, devCertsOptions{out: pkiDir, accounts: []string{"sender", "receiver"}, keyType: string(pki.RSA3072)}); err != nil {
		return nil, err
	}
	payload := filepath.Join(dir, "payload.bin")
	if err := writePayload(payload, size); err != nil {
		return nil, err
	}
	ports, err := benchPorts(7)
	if err != nil {
		return nil, err
	}
	opToken, opSum := benchToken()
	gwDir := filepath.Join(dir, "gateway")
	if err := os.MkdirAll(gwDir, 0o700); err != nil {
		return nil, err
	}
	audience := "https://" + ports[0]
	if err := writeBenchYAML(filepath.Join(gwDir, "gateway.yaml"), map[string]any{
		"id": "kurer-bench", "audience": audience, "listen": ports[0], "admin_listen": ports[1], "metrics_listen": ports[2],
		"tls_cert": filepath.Join(pkiDir, "gateway.pem"), "tls_key": filepath.Join(pkiDir, "gateway.key"),
		"signing_key": filepath.Join(pkiDir, "gateway-signing.key"), "trust_roots": []string{filepath.Join(pkiDir, "ca.pem")},
		"operator_token_sha256": opSum, "data_dir": filepath.Join(gwDir, "data"), "max_message_size": "5GiB",
	}); err != nil {
		return nil, err
	}
	var procs []*benchProc
	defer func() {
		for _, p := range procs {
			p.stop()
		}
	}()
	gw, err := startBenchProc("gateway", filepath.Join(gwDir, "log"), "gateway", "serve", "--config", filepath.Join(gwDir, "gateway.yaml"), "--dev")
	if err != nil {
		return nil, err
	}
	procs = append(procs, gw)
	if err := benchWait(ctx, 30*time.Second, func() bool {
		resp, err := http.Get("http://" + ports[2] + api.PathReady)
		if err != nil {
			return false
		}
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}); err != nil {
		return nil, fmt.Errorf("gateway not ready: %w", err)
	}
	admin, err := benchAdmin(pkiDir, "https://"+ports[1], opToken)
	if err != nil {
		return nil, err
	}
	names := []string{"sender", "receiver"}
	ids, err := benchRegister(ctx, admin, pkiDir, names)
	if err != nil {
		return nil, err
	}
	clients := make([]*localapi.Client, 2)
	inbox := filepath.Join(dir, "receiver", "inbox")
	for i, n := range names {
		adir := filepath.Join(dir, n)
		if err := os.MkdirAll(filepath.Join(adir, "inbox"), 0o700); err != nil {
			return nil, err
		}
		token := randomToken()
		if err := os.WriteFile(filepath.Join(adir, "token"), []byte(token+"\n"), 0o600); err != nil {
			return nil, err
		}
		cfg := map[string]any{
			"account": ids[i], "data_dir": filepath.Join(adir, "data"),
			"gateway":        map[string]any{"url": "https://" + ports[0], "ca_file": filepath.Join(pkiDir, "ca.pem"), "audience": audience},
			"keys":           []map[string]string{{"cert": filepath.Join(pkiDir, n+".pem"), "key": filepath.Join(pkiDir, n+".key")}},
			"trust_roots":    []string{filepath.Join(pkiDir, "ca.pem")},
			"local_api":      map[string]any{"listen": ports[3+2*i], "token_file": filepath.Join(adir, "token"), "max_file_size": size + 1, "max_total_size": size + 1<<20},
			"metrics_listen": ports[4+2*i],
			"retry":          map[string]any{"initial": "100ms", "max": "1s"},
		}
		if n == "receiver" {
			cfg["adapters"] = []map[string]any{{"kind": "folder", "name": "folder", "options": map[string]any{"inbox": inbox}}}
		}
		if err := writeBenchYAML(filepath.Join(adir, "agent.yaml"), cfg); err != nil {
			return nil, err
		}
		p, err := startBenchProc(n, filepath.Join(adir, "log"), "agent", "run", "--config", filepath.Join(adir, "agent.yaml"), "--dev")
		if err != nil {
			return nil, err
		}
		procs = append(procs, p)
		if clients[i], err = localapi.NewClient("http://"+ports[3+2*i], token); err != nil {
			return nil, err
		}
		c := clients[i]
		if err := benchWait(ctx, 30*time.Second, func() bool { return c.Ready(ctx) == nil }); err != nil {
			return nil, fmt.Errorf("agent %s not ready (log %s): %w", n, filepath.Join(adir, "log"), err)
		}
	}

	start := time.Now()
	r, err := clients[0].Send(ctx, localapi.SendRequest{Type: benchType, To: ids[1], Metadata: benchMetadata(meta, "dokumenter/stor.bin"),
		Files: []localapi.SendFile{{Name: "dokumenter/stor.bin", Size: size, Open: func() (io.ReadCloser, error) { return os.Open(payload) }}}})
	if err != nil {
		return nil, fmt.Errorf("send: %w", err)
	}
	if err := benchWait(ctx, 30*time.Minute, func() bool {
		d, err := clients[0].Message(ctx, r.ID)
		if err != nil || (d.State != localapi.StateReceived && d.State != localapi.StateProcessed) {
			return false
		}
		_, err = os.Stat(filepath.Join(inbox, r.ID))
		return err == nil
	}); err != nil {
		return nil, fmt.Errorf("large message not received: %w", err)
	}
	res := &largeResult{Size: size, KurerSeconds: time.Since(start).Seconds(), PeakRSSKiB: map[string]int64{}}
	got, err := fileSum(filepath.Join(inbox, r.ID, "dokumenter", "stor.bin"))
	if err != nil {
		return nil, err
	}
	want, err := fileSum(payload)
	if err != nil {
		return nil, err
	}
	if got != want {
		return nil, errors.New("the received file differs from the sent one")
	}
	for _, p := range procs {
		res.PeakRSSKiB[p.name] = vmHWM(strconv.Itoa(p.cmd.Process.Pid))
	}
	for _, p := range procs {
		p.stop()
	}
	procs = nil
	fmt.Fprintf(progress, "  kurer %.1f s; baseline ...\n", res.KurerSeconds)

	// Baseline: openssl cms encrypt, PUT to a plain Go file server, GET,
	// openssl cms decrypt, on the same bytes.
	res.Baseline = map[string]float64{}
	srvDir := filepath.Join(dir, "fileserver")
	if err := os.MkdirAll(srvDir, 0o700); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := filepath.Join(srvDir, filepath.Base(r.URL.Path))
		switch r.Method {
		case http.MethodPut:
			f, err := os.Create(p)
			if err == nil {
				_, err = io.Copy(f, r.Body)
				if err == nil {
					err = f.Sync()
				}
				if cerr := f.Close(); err == nil {
					err = cerr
				}
			}
			if err != nil {
				http.Error(w, "write failed", http.StatusInternalServerError)
				return
			}
			w.WriteHeader(http.StatusCreated)
		case http.MethodGet:
			http.ServeFile(w, r, p)
		}
	})}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	enc, dl, dec := filepath.Join(dir, "base.der"), filepath.Join(dir, "base-got.der"), filepath.Join(dir, "base.out")
	step := func(name string, f func() error) error {
		t := time.Now()
		if err := f(); err != nil {
			return fmt.Errorf("baseline %s: %w", name, err)
		}
		res.Baseline[name] = time.Since(t).Seconds()
		return nil
	}
	run := func(args ...string) func() error {
		return func() error {
			out, err := exec.CommandContext(ctx, ossl, args...).CombinedOutput()
			if err != nil {
				return fmt.Errorf("%v: %s", err, out)
			}
			return nil
		}
	}
	url := "http://" + ln.Addr().String() + "/case.der"
	if err := step("encrypt", run("cms", "-encrypt", "-binary", "-stream", "-aes-256-gcm", "-in", payload, "-outform", "DER", "-out", enc,
		"-recip", filepath.Join(pkiDir, "receiver.pem"), "-keyopt", "rsa_padding_mode:oaep", "-keyopt", "rsa_oaep_md:sha256")); err != nil {
		return nil, err
	}
	if err := step("put", func() error {
		f, err := os.Open(enc)
		if err != nil {
			return err
		}
		defer f.Close()
		st, _ := f.Stat()
		req, _ := http.NewRequestWithContext(ctx, http.MethodPut, url, f)
		req.ContentLength = st.Size()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			return fmt.Errorf("PUT: %s", resp.Status)
		}
		return nil
	}); err != nil {
		return nil, err
	}
	if err := step("get", func() error {
		resp, err := http.Get(url)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		f, err := os.Create(dl)
		if err != nil {
			return err
		}
		if _, err := io.Copy(f, resp.Body); err != nil {
			_ = f.Close()
			return err
		}
		if err := f.Sync(); err != nil {
			_ = f.Close()
			return err
		}
		return f.Close()
	}); err != nil {
		return nil, err
	}
	if err := step("decrypt", run("cms", "-decrypt", "-binary", "-stream", "-inform", "DER", "-in", dl,
		"-recip", filepath.Join(pkiDir, "receiver.pem"), "-inkey", filepath.Join(pkiDir, "receiver.key"), "-out", dec)); err != nil {
		return nil, err
	}
	if s, err := fileSum(dec); err != nil || s != want {
		return nil, fmt.Errorf("baseline: decrypted bytes differ (%v)", err)
	}
	for _, v := range res.Baseline {
		res.BaseSeconds += v
	}
	res.Ratio = res.KurerSeconds / res.BaseSeconds
	res.TargetRatio = res.Ratio <= 1.3
	res.TargetRSS = true
	for _, v := range res.PeakRSSKiB {
		if v == 0 || v > 64<<10 {
			res.TargetRSS = false
		}
	}
	return res, nil
}

func fileSum(p string) ([32]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return [32]byte{}, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return [32]byte{}, err
	}
	return [32]byte(h.Sum(nil)), nil
}
