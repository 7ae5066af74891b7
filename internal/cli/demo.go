package cli

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"

	"github.com/kurer/kurer/agent"
	"github.com/kurer/kurer/agent/adapter/folder"
	"github.com/kurer/kurer/agent/localapi"
	"github.com/kurer/kurer/gateway"
	"github.com/kurer/kurer/gateway/api"
	gwclient "github.com/kurer/kurer/gateway/client"
	"github.com/kurer/kurer/internal/durable"
	"github.com/kurer/kurer/internal/errs"
	// The folder adapter registers itself for the agents' configs.
	// _ "github.com/kurer/kurer/agent/adapter/folder"
)

// demoCaseType is the message type of the demo's case.
const demoCaseType = "no.kurer.barnevern.sak.overforing.v1"

// demoAccounts is the part of certs-dev/accounts.yaml the demo reads:
// the committed dev accounts with their fixed ids, numbers, files and the
// message types each receives.
type demoAccounts struct {
	CA      string `yaml:"ca"`
	Gateway struct {
		TLSCert    string `yaml:"tls_cert"`
		TLSKey     string `yaml:"tls_key"`
		SigningKey string `yaml:"signing_key"`
	} `yaml:"gateway"`
	Accounts []demoParty `yaml:"accounts"`
}

// demoParty is one account of certs-dev.
type demoParty struct {
	ID           string   `yaml:"id"`
	Name         string   `yaml:"name"` // file stem, folder name in the demo dir
	DisplayName  string   `yaml:"display_name"`
	OrgNumber    string   `yaml:"org_number"`
	Municipality string   `yaml:"municipality"`
	Service      string   `yaml:"service"`
	Cert         string   `yaml:"cert"`
	Key          string   `yaml:"key"`
	Receives     []string `yaml:"receives"`
}

// demoNames are the two accounts the demo runs agents for: sender first.
var demoNames = []string{"trondheim", "oslo"}

// loadDemoAccounts reads certs/accounts.yaml and resolves its file names.
func loadDemoAccounts(certs string) (*demoAccounts, error) {
	data, err := durable.ReadFile(filepath.Join(certs, "accounts.yaml"), 1<<20)
	if err != nil {
		return nil, err
	}
	var acc demoAccounts
	if err := yaml.Unmarshal(data, &acc); err != nil {
		return nil, fmt.Errorf("%s/accounts.yaml: %w", certs, err)
	}
	abs := func(p *string) {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(certs, *p)
		}
	}
	abs(&acc.CA)
	abs(&acc.Gateway.TLSCert)
	abs(&acc.Gateway.TLSKey)
	abs(&acc.Gateway.SigningKey)
	for i := range acc.Accounts {
		abs(&acc.Accounts[i].Cert)
		abs(&acc.Accounts[i].Key)
	}
	if acc.CA == "" || acc.Gateway.TLSCert == "" || acc.Gateway.SigningKey == "" {
		return nil, fmt.Errorf("%s/accounts.yaml: ca and gateway files are required", certs)
	}
	return &acc, nil
}

// party returns the account named name.
func (a *demoAccounts) party(name string) (demoParty, error) {
	for _, p := range a.Accounts {
		if p.Name == name {
			return p, nil
		}
	}
	return demoParty{}, fmt.Errorf("certs-dev has no account %q", name)
}

type demoOptions struct {
	once    bool
	keep    bool
	dir     string
	certs   string
	caseDir string
	timeout time.Duration
}

func newDemoCommand() *cobra.Command {
	o := &demoOptions{}
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run a gateway and two municipal agents and move a case between them",
		Long: `Start, in this one process, a kurer gateway and agents for Trondheim (5001)
and Oslo (0301), on 127.0.0.1 with the embedded store and the development
certificates in certs-dev/ (DEV ONLY: the demo runs in dev mode, which is
what lets the dev CA be trusted). Each agent runs the folder adapter.

Then send the example case transfer (examples/cases/) from Trondheim to Oslo
and show each step as it happens: the case sealed into Trondheim's outbox,
accepted by the gateway, fetched and opened by Oslo's agent, written to
Oslo's inbox folder (with its files and sizes), and the signed receipts
coming back to Trondheim, with the time each step took.

Without --once the demo keeps running and prints the commands to try next
(kurer send, kurer status, where the inbox folders are) until Ctrl-C.

With --once it exits after the first case: 0 only if every file arrived
byte for byte and Oslo's signed receipt verified; 5 otherwise.

Configuration and data go to a new temporary folder (printed; removed on
exit unless --keep) or to --dir (kept).`,
		Example: `  # What make run does
  kurer demo

  # A self-check: exit 0 only if the case arrived intact and the receipt verified
  kurer demo --once

  # Keep the configs, databases, inbox folders and logs for a look afterwards
  kurer demo --once --dir /tmp/kurer-demo`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.run(cmd)
		},
	}
	f := cmd.Flags()
	f.BoolVar(&o.once, "once", false, "send one case, check it, and exit (0 only if it arrived intact and the receipt verified)")
	f.BoolVar(&o.keep, "keep", false, "keep the temporary folder on exit")
	f.StringVar(&o.dir, "dir", "", "folder for configs, data, inbox folders and logs (default: a new temporary folder)")
	f.StringVar(&o.certs, "certs", "", "the development certificates (default: certs-dev/ in this folder or a parent)")
	f.StringVar(&o.caseDir, "case", "", "the case folder to send (default: the case transfer in examples/cases/)")
	f.DurationVar(&o.timeout, "timeout", 60*time.Second, "how long the first case may take to arrive and be confirmed")
	return cmd
}

// findUp looks for rel in the working directory and its parents.
func findUp(rel string) (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		p := filepath.Join(dir, rel)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		if filepath.Dir(dir) == dir {
			return "", fmt.Errorf("%s not found in %s or its parents", rel, wd)
		}
	}
}

// findCase returns the example case folder of demoCaseType and its
// metadata file.
func findCase(dir string) (caseDir, meta string, err error) {
	if dir == "" {
		cases, err := findUp(filepath.Join("examples", "cases"))
		if err != nil {
			return "", "", err
		}
		// The case folder holds melding.json whose type-specific content
		// is the case transfer; pick the folder named for it.
		entries, err := os.ReadDir(cases)
		if err != nil {
			return "", "", err
		}
		for _, e := range entries {
			if e.IsDir() && strings.Contains(e.Name(), "overforing") {
				dir = filepath.Join(cases, e.Name())
				break
			}
		}
		if dir == "" {
			return "", "", fmt.Errorf("no case transfer folder (*overforing*) in %s", cases)
		}
	}
	for _, name := range []string{localapi.MetadataFile, "case.json"} {
		p := filepath.Join(dir, name)
		if _, err := os.Stat(p); err == nil {
			return dir, p, nil
		}
	}
	return "", "", fmt.Errorf("%s has no %s", dir, localapi.MetadataFile)
}

// demoAgent is one running agent of the demo.
type demoAgent struct {
	party     demoParty
	a         *agent.Agent
	url       string
	tokenFile string
	token     string
	inbox     string
	outbox    string
	dir       string
	done      chan error
}

// demoNet is the running demo: a gateway and the agents.
type demoNet struct {
	dir     string
	gw      *gateway.Server
	gwURL   string
	gwDone  chan error
	agents  []*demoAgent
	cancel  context.CancelFunc
	logFile *os.File
}

// stop shuts everything down and waits, bounded, for it.
func (n *demoNet) stop() error {
	n.cancel()
	var errs []error
	timeout := time.After(30 * time.Second)
	for _, a := range n.agents {
		select {
		case err := <-a.done:
			if err != nil && !errors.Is(err, context.Canceled) {
				errs = append(errs, fmt.Errorf("agent %s: %w", a.party.Name, err))
			}
		case <-timeout:
			return errors.New("demo: shutdown timed out")
		}
	}
	if n.gwDone != nil {
		select {
		case err := <-n.gwDone:
			if err != nil && !errors.Is(err, context.Canceled) {
				errs = append(errs, fmt.Errorf("gateway: %w", err))
			}
		case <-timeout:
			return errors.New("demo: shutdown timed out")
		}
	}
	if n.logFile != nil {
		_ = n.logFile.Close()
	}
	return errors.Join(errs...)
}

func randomToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// startDemoNet starts the gateway and the agents under dir. Their logs go
// to dir/demo.log (JSON), so that the terminal shows only the story.
func startDemoNet(ctx context.Context, dir string, acc *demoAccounts) (_ *demoNet, err error) {
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	n := &demoNet{dir: dir, cancel: cancel}
	defer func() {
		if err != nil {
			_ = n.stop()
		}
	}()
	n.logFile, err = os.OpenFile(filepath.Join(dir, "demo.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return n, err
	}
	logger := slog.New(slog.NewJSONHandler(n.logFile, &slog.HandlerOptions{Level: slog.LevelInfo}))

	gwDir := filepath.Join(dir, "gateway")
	if err := os.MkdirAll(gwDir, 0o700); err != nil {
		return n, err
	}
	opToken := randomToken()
	opSum := sha256.Sum256([]byte(opToken))
	if err := os.WriteFile(filepath.Join(gwDir, "operator.token"), []byte(opToken+"\n"), 0o600); err != nil {
		return n, err
	}
	const audience = "https://kurer-demo.invalid"
	gcfg := gateway.Config{
		ID:                  "kurer-demo-gateway",
		Audience:            audience,
		Listen:              "127.0.0.1:0",
		AdminListen:         "127.0.0.1:0",
		MetricsListen:       "127.0.0.1:0",
		TLSCert:             acc.Gateway.TLSCert,
		TLSKey:              acc.Gateway.TLSKey,
		TrustRoots:          []string{acc.CA},
		SigningKey:          acc.Gateway.SigningKey,
		OperatorTokenSHA256: hex.EncodeToString(opSum[:]),
		DataDir:             gwDir,
		Dev:                 true,
	}
	n.gw, err = gateway.New(gcfg, logger.With("component", "gateway"))
	if err != nil {
		return n, err
	}
	n.gwURL = "https://" + n.gw.Addr().String()
	n.gwDone = make(chan error, 1)
	go func() { n.gwDone <- n.gw.Run(runCtx) }()

	// The catalog: every certs-dev account, added through the admin API as
	// an operator would (kurer gateway account add), so it is audited.
	if err := registerDemoAccounts(ctx, acc, "https://"+n.gw.AdminAddr().String(), opToken); err != nil {
		return n, err
	}

	for _, name := range demoNames {
		p, err := acc.party(name)
		if err != nil {
			return n, err
		}
		d := &demoAgent{party: p, dir: filepath.Join(dir, p.Name), done: make(chan error, 1)}
		d.inbox = filepath.Join(d.dir, "inbox")
		d.outbox = filepath.Join(d.dir, "outbox")
		d.token = randomToken()
		d.tokenFile = filepath.Join(d.dir, "agent.token")
		for _, sub := range []string{d.dir, d.inbox, d.outbox} {
			if err := os.MkdirAll(sub, 0o700); err != nil {
				return n, err
			}
		}
		if err := os.WriteFile(d.tokenFile, []byte(d.token+"\n"), 0o600); err != nil {
			return n, err
		}
		var opts yaml.Node
		if err := opts.Encode(demoFolderOptions(d)); err != nil {
			return n, err
		}
		acfg := agent.Config{
			Account:    p.ID,
			DataDir:    filepath.Join(d.dir, "data"),
			Dev:        true,
			Gateway:    agent.GatewayConfig{URL: n.gwURL, CAFile: acc.CA, Audience: audience},
			Keys:       []agent.KeyConfig{{Cert: p.Cert, Key: p.Key}},
			TrustRoots: []string{acc.CA},
			LocalAPI:   agent.LocalAPIConfig{Listen: "127.0.0.1:0", TokenFile: d.tokenFile},
			Retry:      agent.RetryConfig{Initial: 200 * time.Millisecond, Max: 5 * time.Second},
			Adapters:   []agent.AdapterConfig{{Kind: folder.Kind, Name: "folder", Options: opts}},
		}
		d.a, err = agent.New(acfg, logger.With("agent", p.Name))
		if err != nil {
			return n, fmt.Errorf("agent %s: %w", p.Name, err)
		}
		d.url = d.a.LocalURL()
		n.agents = append(n.agents, d)
		go func() { d.done <- d.a.Run(runCtx) }()
	}
	return n, nil
}

// registerDemoAccounts adds (or updates) every account of acc in the
// gateway's catalog through its admin API, retrying until the freshly
// started gateway answers.
func registerDemoAccounts(ctx context.Context, acc *demoAccounts, adminURL, token string) error {
	caPEM, err := durable.ReadFile(acc.CA, 1<<20)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return fmt.Errorf("%s: no certificate", acc.CA)
	}
	admin, err := gwclient.NewAdmin(gwclient.AdminConfig{BaseURL: adminURL, Token: token, TLS: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for _, p := range acc.Accounts {
		certPEM, err := durable.ReadFile(p.Cert, 1<<20)
		if err != nil {
			return fmt.Errorf("certs-dev: %w", err)
		}
		req := api.AccountRequest{
			ID: p.ID, Name: p.DisplayName, OrgNumber: p.OrgNumber, Municipality: p.Municipality,
			Service: p.Service, Types: p.Receives, Certificates: []string{string(certPEM)},
		}
		for attempt := 0; ; attempt++ {
			_, err = admin.CreateAccount(ctx, req)
			if errs.CodeOf(err) == errs.Conflict {
				// A kept --dir: the account is there from the last run.
				// An update takes no certificates; adding one the
				// account has is a no-op.
				upd := req
				upd.Certificates = nil
				if _, err = admin.UpdateAccount(ctx, p.ID, upd); err == nil {
					_, err = admin.AddCert(ctx, p.ID, string(certPEM))
				}
			}
			if err == nil {
				break
			}
			if errs.CodeOf(err) != errs.Unavailable || ctx.Err() != nil {
				return fmt.Errorf("catalog: add %s: %w", p.Name, err)
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("catalog: add %s: %w", p.Name, err)
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	return nil
}

// demoFolderOptions is the folder adapter's configuration for one agent.
func demoFolderOptions(d *demoAgent) map[string]any {
	return map[string]any{
		"inbox":  d.inbox,
		"outbox": d.outbox,
	}
}

// waitReady polls until every agent's local API answers ready, bounded by
// ctx.
func (n *demoNet) waitReady(ctx context.Context) error {
	for _, d := range n.agents {
		c, err := localapi.NewClient(d.url, d.token)
		if err != nil {
			return err
		}
		tick := time.NewTicker(20 * time.Millisecond)
		for {
			if err := c.Ready(ctx); err == nil {
				break
			}
			select {
			case <-ctx.Done():
				tick.Stop()
				return fmt.Errorf("agent %s not ready: %w", d.party.Name, ctx.Err())
			case err := <-d.done:
				tick.Stop()
				return fmt.Errorf("agent %s stopped: %v", d.party.Name, err)
			case <-tick.C:
			}
		}
		tick.Stop()
	}
	return nil
}

func (o *demoOptions) run(cmd *cobra.Command) (err error) {
	ctx := cmd.Context()
	out := cmd.OutOrStdout()
	begin := time.Now()

	certs := o.certs
	if certs == "" {
		if certs, err = findUp("certs-dev"); err != nil {
			return exitf(ExitUsage, "demo: %v (run from the repository, or give --certs)", err)
		}
	}
	acc, err := loadDemoAccounts(certs)
	if err != nil {
		return exitf(ExitUsage, "demo: %v", err)
	}
	caseDir, meta, err := findCase(o.caseDir)
	if err != nil {
		return exitf(ExitUsage, "demo: %v", err)
	}
	dir := o.dir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "kurer-demo-"); err != nil {
			return err
		}
		if !o.keep {
			defer func() {
				if rerr := os.RemoveAll(dir); rerr != nil && err == nil {
					err = rerr
				}
			}()
		}
	} else if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	dir, _ = filepath.Abs(dir)

	fmt.Fprintf(out, "kurer demo: a child-welfare case moves from Trondheim (5001) to Oslo (0301)\n\n")
	fmt.Fprintf(out, "  data, configs, logs  %s%s\n", dir, map[bool]string{true: "", false: "  (removed on exit; --keep keeps it)"}[o.dir != "" || o.keep])
	fmt.Fprintf(out, "  certificates         %s  (DEV ONLY: trusted because the demo runs in dev mode)\n\n", certs)

	n, err := startDemoNet(ctx, dir, acc)
	if err != nil {
		return fmt.Errorf("demo: start: %w", err)
	}
	defer func() {
		if serr := n.stop(); serr != nil && err == nil {
			err = serr
		}
	}()
	rctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	if err := n.waitReady(rctx); err != nil {
		return &ExitErr{Code: ExitUnavailable, Err: fmt.Errorf("demo: %w (logs: %s)", err, filepath.Join(dir, "demo.log"))}
	}
	tr, oslo := n.agents[0], n.agents[1]
	fmt.Fprintf(out, "[%6d ms] gateway    %s  (embedded bbolt store, TLS, signs receipts)\n", time.Since(begin).Milliseconds(), n.gwURL)
	for _, d := range n.agents {
		fmt.Fprintf(out, "[%6d ms] agent      %-9s account %s, local API %s, folder adapter\n", time.Since(begin).Milliseconds(), d.party.Name, d.party.ID, d.url)
	}

	res, err := demoSend(rctx, out, tr, oslo, caseDir, meta)
	if err != nil {
		return err
	}
	verdict := res.verdict()
	if verdict == nil {
		fmt.Fprintf(out, "\nOK: every file arrived byte for byte, and Oslo's signed receipt was verified by Trondheim.\n")
	} else {
		fmt.Fprintf(out, "\nNOT OK: %v\n", verdict)
	}
	if o.once {
		return verdict
	}
	printTryNext(out, n, tr, oslo, caseDir, meta, res.id)
	// Until Ctrl-C: show what happens at both agents as it happens.
	tails := make(chan struct{}, len(n.agents))
	w := &lockedWriter{w: out}
	for _, d := range n.agents {
		go func() {
			defer func() { tails <- struct{}{} }()
			tailEvents(ctx, w, d)
		}()
	}
	<-ctx.Done()
	for range n.agents {
		<-tails
	}
	fmt.Fprintf(out, "\nstopping ...\n")
	return nil
}

// lockedWriter serialises writes of concurrent printers.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// tailEvents prints d's state changes from now on until ctx ends.
func tailEvents(ctx context.Context, out io.Writer, d *demoAgent) {
	c, err := localapi.NewClient(d.url, d.token)
	if err != nil {
		return
	}
	cursor, err := c.LatestEvent(ctx)
	if err != nil {
		return
	}
	for ctx.Err() == nil {
		ev, err := c.Events(ctx, cursor, eventsWait)
		if err != nil {
			// The agent is stopping or briefly busy; try again shortly.
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
			continue
		}
		cursor = max(cursor, ev.Next)
		for _, e := range ev.Events {
			line := fmt.Sprintf("  %s  %-9s %-3s %s  %s", e.At.Local().Format("15:04:05.000"), d.party.Name, e.Direction, e.ID, e.State)
			if e.Reason != "" {
				line += "  " + e.Reason
			}
			fmt.Fprintln(out, line)
		}
	}
}

// demoResult is what the first case showed.
type demoResult struct {
	id       string
	detail   localapi.MessageDetail
	missing  []string // files not in the inbox or with other bytes
	receipt  bool     // a verified mottatt receipt from Oslo
	inboxDir string
}

func (r demoResult) verdict() error {
	switch {
	case r.detail.State != localapi.StateReceived && r.detail.State != localapi.StateProcessed:
		return waitVerdict(r.detail)
	case len(r.missing) > 0:
		return exitf(ExitNotDone, "files missing or changed in Oslo's inbox: %s", strings.Join(r.missing, ", "))
	case !r.receipt:
		return exitf(ExitNotDone, "no verified mottatt receipt from Oslo")
	}
	return nil
}

// stepNotes say what each state means in the demo's story.
var stepNotes = map[string]string{
	localapi.StateQueued:    "validated against the schema, signed by Trondheim, encrypted to Oslo, fsynced in Trondheim's outbox",
	localapi.StateSent:      "the gateway stored the ciphertext and signed an \"accepted\" receipt",
	localapi.StateDelivered: "Oslo's agent fetched it, opened and verified it, stored it durably and acked: gateway notice \"delivered\"",
	localapi.StateReceived:  "Oslo's signed application receipt \"mottatt\" arrived and was verified",
	localapi.StateProcessed: "Oslo's case system marked it processed: signed receipt \"behandlet\"",
	localapi.StateRejected:  "refused",
	localapi.StateExpired:   "expired before delivery",
	localapi.StateFailed:    "could not be delivered",
}

// demoSend sends the case from tr to oslo, narrates its steps and checks
// the result.
func demoSend(ctx context.Context, out io.Writer, tr, oslo *demoAgent, caseDir, meta string) (demoResult, error) {
	var res demoResult
	c, err := localapi.NewClient(tr.url, tr.token)
	if err != nil {
		return res, err
	}
	metaBytes, err := durable.ReadFile(meta, maxMetadataSize)
	if err != nil {
		return res, err
	}
	metaAbs, _ := filepath.Abs(meta)
	files, err := collectFiles([]string{caseDir}, metaAbs)
	if err != nil {
		return res, err
	}
	var total int64
	req := localapi.SendRequest{Type: demoCaseType, To: "municipality:" + oslo.party.Municipality, Metadata: metaBytes}
	for _, f := range files {
		path := f.path
		req.Files = append(req.Files, localapi.SendFile{Name: f.name, Size: f.size, Open: func() (io.ReadCloser, error) { return os.Open(path) }})
		total += f.size
	}
	rel := caseDir
	if wd, err := os.Getwd(); err == nil {
		if r, err := filepath.Rel(wd, caseDir); err == nil && !strings.HasPrefix(r, "..") {
			rel = r
		}
	}
	fmt.Fprintf(out, "\nTrondheim sends %s to municipality 0301\n", rel)
	fmt.Fprintf(out, "  type %s, %s + %d file(s), %s\n\n", demoCaseType, localapi.MetadataFile, len(files), humanSize(total+int64(len(metaBytes))))

	start := time.Now()
	resp, err := c.Send(ctx, req)
	if err != nil {
		return res, agentError("demo: send", err)
	}
	res.id = resp.ID
	fmt.Fprintf(out, "  message id %s (in Trondheim's outbox after %d ms)\n\n", resp.ID, time.Since(start).Milliseconds())

	var prev time.Time
	d, err := followMessage(ctx, c, resp.ID, func(sc localapi.StateChange) {
		step := "      "
		if !prev.IsZero() {
			step = fmt.Sprintf("+%4d", sc.At.Sub(prev).Milliseconds())
		}
		if prev.IsZero() {
			prev = sc.At
		}
		fmt.Fprintf(out, "  [%s ms] %-9s %s\n", step, sc.State, stepNotes[sc.State])
		prev = sc.At
	})
	res.detail = d
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return res, exitf(ExitNotDone, "demo: message %s still %s after the timeout (logs: %s)", resp.ID, d.State, filepath.Join(filepath.Dir(tr.dir), "demo.log"))
		}
		return res, agentError("demo: follow", err)
	}
	if len(d.History) > 0 {
		first, last := d.History[0].At, d.History[len(d.History)-1].At
		fmt.Fprintf(out, "  total: %d ms from Trondheim's outbox to Oslo's confirmed receipt\n", last.Sub(first).Milliseconds())
	}

	// Oslo's inbox folder.
	res.inboxDir, err = waitInbox(ctx, oslo.inbox, resp.ID)
	if err != nil {
		res.missing = append(res.missing, "the whole message ("+err.Error()+")")
	} else {
		fmt.Fprintf(out, "\nIn Oslo's inbox folder: %s\n", res.inboxDir)
		if err := listFolder(out, res.inboxDir); err != nil {
			return res, err
		}
		res.missing = compareCase(res.inboxDir, files, metaBytes)
	}

	fmt.Fprintf(out, "\nReceipts at Trondheim (signed; verified when they arrived):\n")
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  KIND\tISSUER\tVERIFIED\tAFTER")
	for _, r := range d.Receipts {
		issuer := r.Issuer
		if r.Issuer == oslo.party.ID {
			issuer += " (Oslo)"
		}
		after := ""
		if len(d.History) > 0 {
			after = fmt.Sprintf("%d ms", r.At.Sub(d.History[0].At).Milliseconds())
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", r.Kind, issuer, yesNo(r.Verified), after)
		if r.Kind == "mottatt" && r.Verified && r.Issuer == oslo.party.ID {
			res.receipt = true
		}
	}
	_ = tw.Flush()
	return res, nil
}

// waitInbox polls Oslo's inbox folder until the message's folder appears.
// The folder adapter writes each message atomically (temp + rename) to a
// folder named by its id.
func waitInbox(ctx context.Context, inbox, id string) (string, error) {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		entries, err := os.ReadDir(inbox)
		if err != nil {
			return "", err
		}
		for _, e := range entries {
			if e.IsDir() && !strings.HasPrefix(e.Name(), ".") && strings.Contains(e.Name(), id) {
				return filepath.Join(inbox, e.Name()), nil
			}
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("no folder for %s in %s", id, inbox)
		case <-tick.C:
		}
	}
}

// listFolder prints every file under dir with its size.
func listFolder(out io.Writer, dir string) error {
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	var rows []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		rows = append(rows, fmt.Sprintf("  %s\t  %s\t", humanSize(info.Size()), filepath.ToSlash(rel)))
		return nil
	})
	if err != nil {
		return err
	}
	sort.Strings(rows)
	for _, r := range rows {
		fmt.Fprintln(tw, r)
	}
	return tw.Flush()
}

// compareCase byte-compares every sent file and the metadata with the
// inbox folder and returns the names that are missing or differ.
func compareCase(inboxDir string, files []payloadFile, meta []byte) []string {
	var bad []string
	for _, f := range files {
		if !sameFile(f.path, findInInbox(inboxDir, f.name)) {
			bad = append(bad, f.name)
		}
	}
	got, err := os.ReadFile(findInInbox(inboxDir, localapi.MetadataFile))
	if err != nil || !bytes.Equal(got, meta) {
		bad = append(bad, localapi.MetadataFile)
	}
	return bad
}

// findInInbox returns the path of an envelope file name in a delivered
// message folder (the payload may sit in a sub-folder of it).
func findInInbox(dir, name string) string {
	for _, sub := range []string{"", "files", "payload"} {
		p := filepath.Join(dir, sub, filepath.FromSlash(name))
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return filepath.Join(dir, filepath.FromSlash(name))
}

// sameFile reports whether two files have the same bytes (streamed).
func sameFile(a, b string) bool {
	ha, err1 := hashFile(a)
	hb, err2 := hashFile(b)
	return err1 == nil && err2 == nil && ha == hb
}

func hashFile(p string) ([32]byte, error) {
	var sum [32]byte
	f, err := os.Open(p)
	if err != nil {
		return sum, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return sum, err
	}
	copy(sum[:], h.Sum(nil))
	return sum, nil
}

func humanSize(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// printTryNext prints the commands a user can paste while the demo runs.
func printTryNext(out io.Writer, n *demoNet, tr, oslo *demoAgent, caseDir, meta, id string) {
	bin := "bin/kurer"
	if _, err := os.Stat(bin); err != nil {
		bin = "kurer"
	}
	rel := func(p string) string {
		if wd, err := os.Getwd(); err == nil {
			if r, err := filepath.Rel(wd, p); err == nil && !strings.HasPrefix(r, "..") {
				return r
			}
		}
		return p
	}
	fmt.Fprintf(out, `
The demo keeps running. In another terminal, try (Ctrl-C here stops it):

  # Trondheim's agent for the commands below
  export KURER_AGENT_URL=%s KURER_AGENT_TOKEN=$(cat %s)

  # send the case again and wait for Oslo's receipt
  %s send --to 0301 --type %s --metadata %s --wait %s

  # the first message's history and receipts; a live table of all
  %s status %s
  %s status --watch

  # Oslo's side: what arrived, as Oslo's agent sees it
  %s status --direction in --agent %s --token-file %s

  # the folder adapters: drop a case folder into an outbox, read an inbox
  Trondheim outbox %s
  Oslo inbox       %s
  logs             %s

Live: state changes at both agents (time, agent, direction, message, state):
`, tr.url, tr.tokenFile,
		bin, demoCaseType, rel(meta), rel(caseDir),
		bin, id, bin,
		bin, oslo.url, oslo.tokenFile,
		tr.outbox, oslo.inbox, filepath.Join(n.dir, "demo.log"))
}
