// Package agenttest starts a real kurer gateway (gateway/gatewaytest: TLS
// on 127.0.0.1:0, a pkitest PKI, accounts registered through the admin
// API) and agents in-process, each with the folder adapter on real temp
// folders, for integration tests of the agent.
package agenttest

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kurer/kurer/agent"
	"github.com/kurer/kurer/agent/adapter/folder"
	"github.com/kurer/kurer/gateway"
	"github.com/kurer/kurer/gateway/gatewaytest"
	"github.com/kurer/kurer/internal/pki/pkitest"
	"github.com/kurer/kurer/schemas"
)

// Token is every agent's local API token.
const Token = "agenttest-token-0123456789abcdef"

// Node is one agent of a Network.
type Node struct {
	Name    string
	ID      string // account id
	DataDir string
	Inbox   string // folder adapter inbox ("" with Setup.OwnReceiver)
	Outbox  string // folder adapter outbox
	Account *pkitest.Account
	Agent   *agent.Agent
	URL     string // local API base URL
	Token   string
	Done    chan error // Run's result

	opts   []agent.Option
	config ConfigFunc
	log    io.Writer
	cancel context.CancelFunc
}

// Network is a running gateway with its agents.
type Network struct {
	TB       testing.TB
	PKI      *pkitest.PKI
	Gateway  *gateway.Server
	URL      string
	Audience string
	TLS      *tls.Config
	Nodes    map[string]*Node

	stopGateway func()
}

// NewNetwork starts a gateway and one agent per name (oslo, bergen or
// trondheim) and stops them all when the test ends.
func NewNetwork(tb testing.TB, names ...string) *Network {
	return NewNetworkWith(tb, nil, names...)
}

// NewNetworkWith is NewNetwork with extra agent options per name.
func NewNetworkWith(tb testing.TB, opts map[string][]agent.Option, names ...string) *Network {
	tb.Helper()
	return NewNetworkSetup(tb, Setup{Options: opts}, names...)
}

// Setup shapes the agents of a network.
type Setup struct {
	// Options are extra agent options per name.
	Options map[string][]agent.Option
	// OwnReceiver names nodes whose folder adapter takes no incoming
	// messages, because Options give them another adapter.Receiver.
	OwnReceiver map[string]bool
	// Config adjusts a node's agent.Config per name, at every start.
	Config map[string]ConfigFunc
	// Logs takes a node's JSON log per name (default: discarded).
	Logs map[string]io.Writer
}

// NewNetworkSetup is NewNetwork shaped by s.
func NewNetworkSetup(tb testing.TB, s Setup, names ...string) *Network {
	tb.Helper()
	opts := s.Options
	e := gatewaytest.New(tb, func(c *gateway.Config) { c.LeaseTimeout = 2 * time.Second })
	n := &Network{TB: tb, PKI: e.PKI, Gateway: e.Srv, URL: e.URL(), Audience: e.Cfg.Audience, TLS: e.TLS,
		Nodes: map[string]*Node{}, stopGateway: e.Stop}
	types := []string{schemas.TypeSakOverforing, schemas.TypeMottatt, schemas.TypeAvvist, schemas.TypeBehandlet,
		schemas.TypeDokumentasjonForesporsel, schemas.TypeDokumentasjonSvar}
	for _, name := range names {
		id, ok := e.IDs[name]
		if !ok {
			tb.Fatalf("agenttest: unknown party %q (oslo, bergen, trondheim)", name)
		}
		e.SetTypes(name, types...)
		root := tb.TempDir()
		nd := &Node{Name: name, ID: id, DataDir: filepath.Join(root, "data"), Inbox: filepath.Join(root, "inbox"),
			Outbox: filepath.Join(root, "outbox"), Account: e.PKI.Accounts[name], Token: Token, opts: opts[name], config: s.Config[name],
			log: s.Logs[name]}
		if s.OwnReceiver[name] {
			nd.Inbox = ""
		}
		n.Nodes[name] = nd
	}
	for _, name := range names {
		n.start(n.Nodes[name])
	}
	return n
}

// start builds and runs a node's agent on its data dir.
func (n *Network) start(nd *Node, extra ...agent.Option) {
	n.TB.Helper()
	f, err := folder.New("folder", folder.Config{Inbox: nd.Inbox, Outbox: nd.Outbox, PollInterval: 50 * time.Millisecond}, nil)
	if err != nil {
		n.TB.Fatal(err)
	}
	cfg := agent.Config{Account: nd.ID, DataDir: nd.DataDir, Dev: true,
		Gateway:  agent.GatewayConfig{URL: n.URL, Audience: n.Audience},
		LocalAPI: agent.LocalAPIConfig{Listen: "127.0.0.1:0"},
		Retry:    agent.RetryConfig{Initial: 20 * time.Millisecond, Max: 200 * time.Millisecond},
		Receive:  agent.ReceiveConfig{Wait: time.Second}}
	if nd.config != nil {
		nd.config(n, &cfg)
	}
	opts := append([]agent.Option{agent.WithKeys(agent.Key{Cert: nd.Account.Cert, Signer: nd.Account.Key}),
		agent.WithTrustRoots(n.PKI.CA.Cert), agent.WithGatewayTLS(n.TLS.Clone()), agent.WithToken(Token),
		agent.WithAdapters(f)}, nd.opts...)
	opts = append(opts, extra...)
	log := slog.New(slog.DiscardHandler)
	if nd.log != nil {
		log = slog.New(slog.NewJSONHandler(nd.log, nil))
	}
	a, err := agent.New(cfg, log, opts...)
	if err != nil {
		n.TB.Fatalf("agent %s: %v", nd.Name, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	nd.Agent, nd.URL, nd.Done, nd.cancel = a, a.LocalURL(), done, cancel
	go func() { done <- a.Run(ctx) }()
	n.TB.Cleanup(func() { cancel(); _ = a.Close() })
}

// Stop stops a node's agent and waits for Run to return, giving its result.
func (n *Network) Stop(name string) error {
	n.TB.Helper()
	n.Nodes[name].cancel()
	return n.wait(name, "stop")
}

// Wait waits for a node's Run to end on its own (a halted agent ends
// without being cancelled) and returns its result.
func (n *Network) Wait(name string) error {
	n.TB.Helper()
	return n.wait(name, "end")
}

func (n *Network) wait(name, what string) error {
	n.TB.Helper()
	nd := n.Nodes[name]
	select {
	case err := <-nd.Done:
		nd.Done <- err
		return err
	case <-time.After(30 * time.Second):
		n.TB.Fatalf("agent %s did not %s", name, what)
		return nil
	}
}

// Restart closes a node's agent (if still running) and starts a new one on
// the same data dir and folders, with the node's options plus extra.
func (n *Network) Restart(name string, extra ...agent.Option) *Node {
	n.TB.Helper()
	_ = n.Stop(name)
	nd := n.Nodes[name]
	n.start(nd, extra...)
	return nd
}

// LogBuffer takes an agent's JSON log (Setup.Logs) while the agent writes
// it, for tests to read.
type LogBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String is the whole log so far.
func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Records are the log's records with message msg, decoded.
func (l *LogBuffer) Records(tb testing.TB, msg string) []map[string]any {
	tb.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(l.String()), "\n") {
		if line == "" {
			continue
		}
		var r map[string]any
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			tb.Fatalf("log line %q: %v", line, err)
		}
		if r["msg"] == msg {
			out = append(out, r)
		}
	}
	return out
}
