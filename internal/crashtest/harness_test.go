// Package crashtest runs real kurer processes (a gateway and agents, each
// with its own data directory and config) and kills them with SIGKILL at
// random moments while messages move, then checks that every message
// arrived exactly once, byte for byte, and that every sender saw a terminal
// state. See docs/reliability.md.
package crashtest

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.yaml.in/yaml/v3"

	"github.com/kurer/kurer/agent/localapi"
	"github.com/kurer/kurer/gateway/api"
	gwclient "github.com/kurer/kurer/gateway/client"
	"github.com/kurer/kurer/internal/audit"
	"github.com/kurer/kurer/internal/errs"

	// The processes run the kurer binary built in TestMain; importing the
	// command's package ties go test's result cache to all of its code, so
	// that a change to the gateway or the agent reruns this suite.
	_ "github.com/kurer/kurer/internal/cli"
)

// kurerBin is the kurer binary built once in TestMain.
var kurerBin string

// repo is the repository root (for examples/cases).
var repo string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "kurer-crashtest-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	kurerBin = filepath.Join(dir, "kurer")
	wd, _ := os.Getwd()
	repo = filepath.Clean(filepath.Join(wd, "..", ".."))
	build := exec.Command("go", "build", "-o", kurerBin, "./cmd/kurer")
	build.Dir = repo
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "crashtest: go build:", err)
		os.Exit(2)
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// full reports whether the full (long) form runs.
func full() bool { return os.Getenv("KURER_CRASH_FULL") == "1" }

// msgType is the type every test message has.
const msgType = "no.kurer.barnevern.sak.overforing.v1"

// receiptTypes are the receipt types every account receives too.
var acctTypes = []string{msgType, "no.kurer.kvittering.mottatt.v1", "no.kurer.kvittering.avvist.v1", "no.kurer.kvittering.behandlet.v1"}

// proc is one kurer process that can be killed and restarted on the same
// config and data directory.
type proc struct {
	name string
	args []string
	log  string

	mu    sync.Mutex
	cmd   *exec.Cmd
	done  chan struct{}
	kills int
	pid   int
}

func (p *proc) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	cmd := exec.Command(kurerBin, p.args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), "KURER_AGENT_TOKEN=")
	if err := cmd.Start(); err != nil {
		_ = f.Close()
		return err
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		_ = f.Close()
		close(done)
	}()
	p.cmd, p.done, p.pid = cmd, done, cmd.Process.Pid
	return nil
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *proc) kill() {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-done
}

// exited reports whether the process has exited on its own.
func (p *proc) exited() bool {
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	select {
	case <-done:
		return true
	default:
		return false
	}
}

// stop ends the process gracefully (SIGTERM), bounded, then SIGKILL.
func (p *proc) stop() {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		_ = cmd.Process.Signal(syscall.SIGKILL)
		<-done
	}
}

func (p *proc) tail(n int) string {
	data, _ := os.ReadFile(p.log)
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// agentProc is a running agent with its folders and local API client.
type agentProc struct {
	*proc
	name, id  string
	apiURL    string
	token     string
	inbox     string
	client    *localapi.Client
	gatewayAt string // what its config points at (gateway or proxy)
}

// net is a gateway and its agents.
type netw struct {
	t       *testing.T
	dir     string
	pki     string
	gw      *proc
	gwAddr  string // agents' listener
	readyz  string
	admin   *gwclient.Admin
	agents  []*agentProc
	allProc []*proc
}

// freePorts reserves n distinct free ports on 127.0.0.1 and releases them.
func freePorts(t testing.TB, n int) []string {
	t.Helper()
	var out []string
	var lns []net.Listener
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		out = append(out, ln.Addr().String())
	}
	for _, ln := range lns {
		_ = ln.Close()
	}
	return out
}

func writeYAML(t testing.TB, path string, v any) {
	t.Helper()
	data, err := yaml.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// party is one test account.
type party struct{ name, org, municipality string }

var parties = []party{
	{"trondheim", "310000019", "5001"},
	{"oslo", "310000027", "0301"},
	{"bergen", "310000035", "4601"},
}

// gatewayURLFor lets a test put something (a fault proxy) between agent i
// and the gateway: it returns the host:port agent i should dial.
type gatewayURLFor func(i int, gwAddr string) string

// startNet writes a dev PKI with `kurer dev-certs`, starts the gateway,
// registers the accounts through the admin API and starts one agent per
// party. via, if not nil, chooses each agent's gateway address.
func startNet(t *testing.T, n int, via gatewayURLFor) *netw {
	t.Helper()
	dir := t.TempDir()
	nw := &netw{t: t, dir: dir, pki: filepath.Join(dir, "pki")}
	names := make([]string, n)
	for i := range n {
		names[i] = parties[i].name
	}
	out, err := exec.Command(kurerBin, "dev-certs", "--out", nw.pki, "--accounts", strings.Join(names, ",")).CombinedOutput()
	if err != nil {
		t.Fatalf("dev-certs: %v\n%s", err, out)
	}
	ports := freePorts(t, 3+2*n)
	nw.gwAddr = ports[0]
	nw.readyz = "http://" + ports[2] + api.PathReady
	opToken := uuid.NewString()
	sum := sha256.Sum256([]byte(opToken))
	gwDir := filepath.Join(dir, "gateway")
	if err := os.MkdirAll(gwDir, 0o700); err != nil {
		t.Fatal(err)
	}
	audience := "https://" + nw.gwAddr
	writeYAML(t, filepath.Join(gwDir, "gateway.yaml"), map[string]any{
		"id": "kurer-crashtest", "audience": audience,
		"listen": ports[0], "admin_listen": ports[1], "metrics_listen": ports[2],
		"tls_cert": filepath.Join(nw.pki, "gateway.pem"), "tls_key": filepath.Join(nw.pki, "gateway.key"),
		"signing_key":           filepath.Join(nw.pki, "gateway-signing.key"),
		"trust_roots":           []string{filepath.Join(nw.pki, "ca.pem")},
		"operator_token_sha256": hex.EncodeToString(sum[:]),
		"data_dir":              filepath.Join(gwDir, "data"),
		"lease_timeout":         "3s",
		"max_attempts":          1000,
	})
	nw.gw = &proc{name: "gateway", log: filepath.Join(gwDir, "log"),
		args: []string{"gateway", "serve", "--config", filepath.Join(gwDir, "gateway.yaml"), "--dev"}}
	nw.allProc = append(nw.allProc, nw.gw)
	t.Cleanup(nw.stopAll)
	if err := nw.gw.start(); err != nil {
		t.Fatal(err)
	}
	nw.waitGateway(t.Context())

	caPEM, err := os.ReadFile(filepath.Join(nw.pki, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	nw.admin, err = gwclient.NewAdmin(gwclient.AdminConfig{BaseURL: "https://" + ports[1], Token: opToken,
		TLS: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}})
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		p := parties[i]
		certPEM, err := os.ReadFile(filepath.Join(nw.pki, p.name+".pem"))
		if err != nil {
			t.Fatal(err)
		}
		acct, err := nw.admin.CreateAccount(t.Context(), api.AccountRequest{
			Name: p.name + " kommune, barneverntjenesten", OrgNumber: p.org, Municipality: p.municipality,
			Service: "barneverntjenesten", Types: acctTypes, Certificates: []string{string(certPEM)},
		})
		if err != nil {
			t.Fatalf("account %s: %v", p.name, err)
		}
		adir := filepath.Join(dir, p.name)
		a := &agentProc{name: p.name, id: acct.ID, apiURL: "http://" + ports[3+2*i], token: uuid.NewString(),
			inbox: filepath.Join(adir, "inbox")}
		for _, d := range []string{adir, a.inbox} {
			if err := os.MkdirAll(d, 0o700); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(filepath.Join(adir, "token"), []byte(a.token+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		a.gatewayAt = nw.gwAddr
		if via != nil {
			a.gatewayAt = via(i, nw.gwAddr)
		}
		writeYAML(t, filepath.Join(adir, "agent.yaml"), map[string]any{
			"account":  acct.ID,
			"data_dir": filepath.Join(adir, "data"),
			"gateway": map[string]any{"url": "https://" + a.gatewayAt, "ca_file": filepath.Join(nw.pki, "ca.pem"),
				"audience": audience},
			"keys":           []map[string]string{{"cert": filepath.Join(nw.pki, p.name+".pem"), "key": filepath.Join(nw.pki, p.name+".key")}},
			"trust_roots":    []string{filepath.Join(nw.pki, "ca.pem")},
			"local_api":      map[string]any{"listen": ports[3+2*i], "token_file": filepath.Join(adir, "token")},
			"metrics_listen": ports[4+2*i],
			"retry":          map[string]any{"initial": "100ms", "max": "1s"},
			"receive":        map[string]any{"wait": "2s"},
			"adapters": []map[string]any{{"kind": "folder", "name": "folder",
				"options": map[string]any{"inbox": a.inbox}}},
		})
		a.proc = &proc{name: p.name, log: filepath.Join(adir, "log"),
			args: []string{"agent", "run", "--config", filepath.Join(adir, "agent.yaml"), "--dev"}}
		a.client, err = localapi.NewClient(a.apiURL, a.token)
		if err != nil {
			t.Fatal(err)
		}
		nw.agents = append(nw.agents, a)
		nw.allProc = append(nw.allProc, a.proc)
		if err := a.start(); err != nil {
			t.Fatal(err)
		}
	}
	for _, a := range nw.agents {
		nw.waitAgent(t.Context(), a)
	}
	return nw
}

func (nw *netw) stopAll() {
	for _, p := range nw.allProc {
		p.stop()
	}
	if nw.t.Failed() {
		for _, p := range nw.allProc {
			nw.t.Logf("--- last lines of %s's log:\n%s", p.name, p.tail(30))
		}
	}
}

// poll calls f every 20 ms until it is true or d has passed (then fatal).
func poll(ctx context.Context, d time.Duration, what string, f func() bool) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !f() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: not within %s", what, d)
		case <-tick.C:
		}
	}
	return nil
}

var plainHTTP = &http.Client{Timeout: 2 * time.Second}

func (nw *netw) waitGateway(ctx context.Context) {
	err := poll(ctx, 30*time.Second, "gateway ready", func() bool {
		if nw.gw.exited() {
			return false
		}
		resp, err := plainHTTP.Get(nw.readyz)
		if err != nil {
			return false
		}
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	if err != nil {
		nw.t.Errorf("%v\n%s", err, nw.gw.tail(20))
		panic(errAbort)
	}
}

func (nw *netw) waitAgent(ctx context.Context, a *agentProc) {
	err := poll(ctx, 30*time.Second, a.name+" ready", func() bool {
		return !a.exited() && a.client.Ready(ctx) == nil
	})
	if err != nil {
		nw.t.Errorf("%v\n%s", err, a.tail(20))
		panic(errAbort)
	}
}

// errAbort unwinds a helper goroutine after it reported a test error.
var errAbort = errors.New("crashtest: aborted")

// restart kills p with SIGKILL, starts it again on the same config and data
// directory and waits until it is ready.
func (nw *netw) restart(ctx context.Context, p *proc) {
	p.kill()
	p.kills++
	if err := p.start(); err != nil {
		nw.t.Errorf("restart %s: %v", p.name, err)
		panic(errAbort)
	}
	if p == nw.gw {
		nw.waitGateway(ctx)
		return
	}
	for _, a := range nw.agents {
		if a.proc == p {
			nw.waitAgent(ctx, a)
		}
	}
}

// msg is one message of the manifest: who sends it to whom, and the
// content, generated from seed so that it need not be held in memory.
type msg struct {
	id       string
	from, to int
	sizes    []int64
	seed     uint64
	sums     [][32]byte // sha256 of each file
	accepted bool
}

// fileName is the envelope name of file j.
func fileName(j int) string { return fmt.Sprintf("dokumenter/fil-%02d.bin", j) }

// content returns a reader of file j's bytes.
func (m *msg) content(j int) io.Reader {
	r := rand.New(rand.NewChaCha8(seed32(m.seed, j)))
	return io.LimitReader(readerFunc(func(b []byte) (int, error) {
		for i := 0; i < len(b); i += 8 {
			v := r.Uint64()
			for k := 0; k < 8 && i+k < len(b); k++ {
				b[i+k] = byte(v >> (8 * k))
			}
		}
		return len(b), nil
	}), m.sizes[j])
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(b []byte) (int, error) { return f(b) }

func seed32(s uint64, j int) [32]byte {
	var out [32]byte
	for i := range 8 {
		out[i] = byte(s >> (8 * i))
	}
	out[8] = byte(j)
	return out
}

// newMsg makes a message with the given file sizes and hashes its content.
func newMsg(from, to int, seed uint64, sizes ...int64) *msg {
	m := &msg{id: uuid.NewString(), from: from, to: to, sizes: sizes, seed: seed}
	for j := range sizes {
		h := sha256.New()
		_, _ = io.Copy(h, m.content(j))
		var s [32]byte
		copy(s[:], h.Sum(nil))
		m.sums = append(m.sums, s)
	}
	return m
}

// metadata is the example case's business message (valid against the
// type's schema) with its document list replaced by m's files.
func metadata(t testing.TB, m *msg) []byte {
	data, err := os.ReadFile(filepath.Join(repo, "examples", "cases", "sak-overforing", "melding.json"))
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	var docs []any
	for j := range m.sizes {
		docs = append(docs, map[string]any{"fil": fileName(j), "tittel": fmt.Sprintf("Dokument %d", j+1),
			"dato": "2026-10-28", "kategori": "referat", "sett_av_familien": false})
	}
	doc["dokumenter"] = docs
	out, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// send submits m through its sender's local API, retrying (same id: the
// send is idempotent) while the agent is down, until it is accepted.
func (nw *netw) send(ctx context.Context, m *msg) error {
	a := nw.agents[m.from]
	req := localapi.SendRequest{Type: msgType, To: nw.agents[m.to].id, ID: m.id, Metadata: metadata(nw.t, m)}
	for j := range m.sizes {
		req.Files = append(req.Files, localapi.SendFile{Name: fileName(j), Size: m.sizes[j],
			Open: func() (io.ReadCloser, error) { return io.NopCloser(m.content(j)), nil }})
	}
	for {
		_, err := a.client.Send(ctx, req)
		if err == nil {
			m.accepted = true
			return nil
		}
		switch errs.CodeOf(err) {
		case errs.BadRequest, errs.Conflict, errs.Unauthenticated, errs.TooLarge, errs.SchemaInvalid:
			return fmt.Errorf("send %s: %w", m.id, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("send %s: %w (last: %v)", m.id, ctx.Err(), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// result is the final verdict.
type result struct {
	lost, duplicated, corrupted, unfinished int
	// auditBad counts messages whose gateway audit trail is not exactly
	// one accepted and one delivered record, and broken chains.
	auditBad int
	problems []string
}

func (r *result) line(kills, messages int) string {
	return fmt.Sprintf("lost=%d duplicated=%d corrupted=%d unfinished=%d audit_bad=%d kills=%d messages=%d",
		r.lost, r.duplicated, r.corrupted, r.unfinished, r.auditBad, kills, messages)
}

func (r *result) ok() bool {
	return r.lost+r.duplicated+r.corrupted+r.unfinished+r.auditBad == 0
}

// checkGatewayAudit stops the gateway (a clean stop ships the rest of its
// audit journal) and checks its audit log: the chain verifies, every
// record carries its journal position once, in order, and each message has
// exactly one accepted and one delivered record, however often the
// gateway was killed between a change and its shipping.
func (nw *netw) checkGatewayAudit(msgs []*msg, res *result) {
	nw.gw.stop()
	path := filepath.Join(nw.dir, "gateway", "data", "audit.log")
	bad := func(format string, args ...any) {
		res.auditBad++
		res.problems = append(res.problems, "gateway audit: "+fmt.Sprintf(format, args...))
	}
	if rep, err := audit.Verify(path); err != nil {
		bad("verify: %v (%+v)", err, rep)
		return
	}
	data, err := os.ReadFile(path)
	if err != nil {
		bad("%v", err)
		return
	}
	count := map[string]int{}
	var last uint64
	for _, line := range strings.Split(strings.TrimSuffix(string(data), "\n"), "\n") {
		var r audit.Record
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			bad("record: %v", err)
			return
		}
		if r.Action == "audit.repaired" { // a torn line cut off after a kill
			continue
		}
		pos, err := strconv.ParseUint(r.Attrs["journal"], 10, 64)
		if err != nil || pos <= last {
			bad("record %d (%s): journal position %q after %d", r.Seq, r.Action, r.Attrs["journal"], last)
		}
		last = pos
		count[r.Action+" "+r.Subject]++
	}
	for _, m := range msgs {
		for _, action := range []string{"message.accepted", "message.delivered"} {
			if n := count[action+" "+m.id]; n != 1 {
				bad("%s: %d %s records, want 1", m.id, n, action)
			}
		}
	}
}

// listLimit is the most the agent's local API lists in one answer, more
// than any run sends.
const listLimit = 10000

// settle waits (bounded by d) until every sender reports received or
// processed for each message, then checks every receiver's inbox folder.
func (nw *netw) settle(ctx context.Context, msgs []*msg, d time.Duration) *result {
	res := &result{}
	terminal := func(s string) bool { return s == localapi.StateReceived || s == localapi.StateProcessed }
	states := make([]string, len(msgs))
	_ = poll(ctx, d, "all messages received", func() bool {
		all := true
		for i, m := range msgs {
			if terminal(states[i]) {
				continue
			}
			det, err := nw.agents[m.from].client.Message(ctx, m.id)
			if err == nil {
				states[i] = det.State
			}
			if !terminal(states[i]) {
				all = false
			}
		}
		return all
	})
	for i, m := range msgs {
		if !terminal(states[i]) {
			res.unfinished++
			det, _ := nw.agents[m.from].client.Message(ctx, m.id)
			var hist []string
			for _, h := range det.History {
				hist = append(hist, h.State+"("+h.Reason+" "+h.Detail+")")
			}
			for _, rc := range det.Receipts {
				hist = append(hist, "receipt "+rc.Kind+"("+rc.Reason+" "+rc.Detail+")")
			}
			res.problems = append(res.problems, fmt.Sprintf("%s: sender state %q: %s", m.id, states[i], strings.Join(hist, ", ")))
		}
	}
	// A receiver sends its mottatt once the message is stored; handing it
	// to the adapter (copying the files into the inbox folder) follows.
	// Wait for that too before looking at the folders.
	_ = poll(ctx, time.Until(deadline(ctx)), "all messages handed to the adapters", func() bool {
		for ai, a := range nw.agents {
			list, err := a.client.List(ctx, localapi.DirectionIn, "", listLimit)
			if err != nil {
				return false
			}
			handed := map[string]bool{}
			for _, sm := range list {
				handed[sm.ID] = sm.State == localapi.InDelivered || sm.State == localapi.InProcessed
			}
			for _, m := range msgs {
				if m.to == ai && !handed[m.id] {
					return false
				}
			}
		}
		return true
	})
	// Inbox folders: exactly the messages sent to each receiver, each once
	// (a folder per message id), byte for byte.
	want := map[string]*msg{}
	for _, m := range msgs {
		want[m.id] = m
	}
	seen := map[string]int{}
	for ai, a := range nw.agents {
		entries, err := os.ReadDir(a.inbox)
		if err != nil {
			res.problems = append(res.problems, err.Error())
			continue
		}
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), ".") {
				continue
			}
			m := want[e.Name()]
			if m == nil || m.to != ai {
				res.duplicated++
				res.problems = append(res.problems, fmt.Sprintf("unexpected folder %s in %s's inbox", e.Name(), a.name))
				continue
			}
			seen[m.id]++
			if !sameContent(filepath.Join(a.inbox, e.Name()), m) {
				res.corrupted++
				res.problems = append(res.problems, fmt.Sprintf("%s: content differs", m.id))
			}
		}
		// The receiving agent's own record: each message once.
		list, err := a.client.List(ctx, localapi.DirectionIn, "", listLimit)
		if err != nil {
			// Unchecked is not passed: count it as unfinished.
			res.unfinished++
			res.problems = append(res.problems, fmt.Sprintf("list %s's incoming messages: %v", a.name, err))
		} else {
			ids := map[string]int{}
			for _, s := range list {
				ids[s.ID]++
			}
			for id, c := range ids {
				if c > 1 {
					res.duplicated += c - 1
					res.problems = append(res.problems, fmt.Sprintf("%s listed %d times by %s", id, c, a.name))
				}
			}
		}
	}
	for _, m := range msgs {
		if seen[m.id] == 0 {
			res.lost++
			res.problems = append(res.problems, fmt.Sprintf("%s: not in %s's inbox", m.id, nw.agents[m.to].name))
		}
	}
	return res
}

// sameContent compares the files of an inbox folder with m's manifest.
func sameContent(dir string, m *msg) bool {
	for j := range m.sizes {
		f, err := os.Open(filepath.Join(dir, filepath.FromSlash(fileName(j))))
		if err != nil {
			return false
		}
		h := sha256.New()
		n, err := io.Copy(h, f)
		_ = f.Close()
		if err != nil || n != m.sizes[j] || [32]byte(h.Sum(nil)) != m.sums[j] {
			return false
		}
	}
	return true
}

// mixedSize draws a payload size: mostly small, some large.
func mixedSize(r *rand.Rand, big bool) int64 {
	switch x := r.IntN(100); {
	case x < 65:
		return 1024 + r.Int64N(15*1024)
	case x < 92:
		return 16*1024 + r.Int64N(496*1024)
	case x < 99 || !big:
		return 512*1024 + r.Int64N(1536*1024)
	default:
		return 2<<20 + r.Int64N(6<<20)
	}
}
