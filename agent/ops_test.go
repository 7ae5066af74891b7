package agent_test

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/kurer/kurer/agent"
	"github.com/kurer/kurer/agent/adapter"
	"github.com/kurer/kurer/agent/agenttest"
	"github.com/kurer/kurer/agent/localapi"
	"github.com/kurer/kurer/internal/errs"
	"github.com/kurer/kurer/internal/metricstest"
	"github.com/kurer/kurer/internal/pki"
)

// TestPinnedReceiverCertificate sends from a Trondheim that pins Oslo's
// certificates (restarted with each row's pins): with Oslo's real
// certificate among the pins the case travels; with only another
// certificate pinned the send is refused with unknown_receiver and nothing
// is queued, uploaded or delivered.
func TestPinnedReceiverCertificate(t *testing.T) {
	tests := []struct {
		name string
		pins func(n *agenttest.Network) []string
		want errs.Code // "" for a case that travels
	}{
		{"oslo's certificate", func(n *agenttest.Network) []string {
			return []string{pki.Fingerprint(n.Nodes["oslo"].Account.Cert)}
		}, ""},
		{"oslo's among others", func(n *agenttest.Network) []string {
			return []string{pki.Fingerprint(n.Nodes["trondheim"].Account.Cert), pki.Fingerprint(n.Nodes["oslo"].Account.Cert)}
		}, ""},
		{"another certificate", func(n *agenttest.Network) []string {
			return []string{pki.Fingerprint(n.Nodes["trondheim"].Account.Cert)}
		}, errs.UnknownReceiver},
	}
	pins := tests[0].pins
	n := agenttest.NewNetworkSetup(t, agenttest.Setup{Config: map[string]agenttest.ConfigFunc{
		"trondheim": func(n *agenttest.Network, c *agent.Config) {
			c.Pins = map[string][]string{n.Nodes["oslo"].ID: pins(n)}
		},
	}}, "trondheim", "oslo")
	tr, osl := n.Nodes["trondheim"], n.Nodes["oslo"]
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if i > 0 {
				pins = tc.pins
				n.Restart("trondheim")
			}
			before, err := tr.Agent.List(localapi.DirectionOut, "", 100)
			if err != nil {
				t.Fatal(err)
			}
			c := exampleCase(t)
			res, err := tr.Agent.Send(t.Context(), c)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("send: %v", err)
				}
				agenttest.Poll(t, "received at sender", func() bool { return outState(tr.Agent, res.ID) == localapi.StateReceived })
				agenttest.Poll(t, "oslo's inbox folder", func() bool {
					_, err := os.Stat(filepath.Join(osl.Inbox, res.ID, localapi.MetadataFile))
					return err == nil
				})
				return
			}
			if code := errs.CodeOf(err); code != tc.want {
				t.Fatalf("send with a wrong pin: code %q (%v), want %q", code, err, tc.want)
			}
			c.ID = "22222222-3333-4444-8555-666666666666"
			if _, err := tr.Agent.Send(t.Context(), c); errs.CodeOf(err) != tc.want {
				t.Fatalf("send with an id and a wrong pin: %v", err)
			}
			after, err := tr.Agent.List(localapi.DirectionOut, "", 100)
			if err != nil || len(after) != len(before) {
				t.Fatalf("trondheim's outgoing list grew from %d to %d (%v)", len(before), len(after), err)
			}
			if _, err := tr.Agent.Message(c.ID); err == nil {
				t.Fatal("the refused case is recorded at the sender")
			}
			if _, err := n.Client("trondheim").Status(t.Context(), c.ID); errs.CodeOf(err) != errs.NotFound {
				t.Fatalf("the gateway knows the refused case: %v", err)
			}
			if _, err := osl.Agent.Message(c.ID); err == nil {
				t.Fatal("oslo knows the refused case")
			}
		})
	}
}

// TestMetricsAndHealth scrapes both agents' metrics listeners around one
// case whose delivery fails at Oslo's case system until it is let through:
// depths, retries, state counts and the queued-to-received latency move as
// promised; /healthz and /readyz answer, and /readyz turns unavailable (with
// uploads retried and counted) once the gateway is gone.
func TestMetricsAndHealth(t *testing.T) {
	rec := &recordingAdapter{failN: 1 << 30}
	metricsOn := func(_ *agenttest.Network, c *agent.Config) { c.MetricsListen = "127.0.0.1:0" }
	n := agenttest.NewNetworkSetup(t, agenttest.Setup{
		Options:     map[string][]agent.Option{"oslo": {agent.WithAdapters(rec)}},
		OwnReceiver: map[string]bool{"oslo": true},
		Config:      map[string]agenttest.ConfigFunc{"trondheim": metricsOn, "oslo": metricsOn},
	}, "trondheim", "oslo")
	tr, osl := n.Nodes["trondheim"], n.Nodes["oslo"]
	trM, oslM := "http://"+tr.Agent.MetricsAddr(), "http://"+osl.Agent.MetricsAddr()
	for _, base := range []string{trM, oslM} {
		if code := httpStatus(t, base+localapi.PathHealth); code != http.StatusOK {
			t.Fatalf("%s%s: %d", base, localapi.PathHealth, code)
		}
		agenttest.Poll(t, "readyz", func() bool { return httpStatus(t, base+localapi.PathReady) == http.StatusOK })
	}

	start := time.Now()
	res, err := tr.Agent.Send(t.Context(), exampleCase(t))
	if err != nil {
		t.Fatal(err)
	}
	agenttest.Poll(t, "received at sender", func() bool { return outState(tr.Agent, res.ID) == localapi.StateReceived })
	// Oslo's case system fails: the message waits and retries are counted.
	agenttest.Poll(t, "oslo retrying the adapter", func() bool {
		m := metricstest.Scrape(t, oslM)
		return m["kurer_agent_adapter_retries_total"] >= 2 && m["kurer_agent_inbox_depth"] == 1 &&
			m[`kurer_agent_messages{direction="in",state="stored"}`] == 1
	})
	rec.mu.Lock()
	rec.failN = 0
	rec.mu.Unlock()
	// A state change is counted just after its commit, so wait for the
	// counters of the last changes on both sides, not only for the states.
	agenttest.Poll(t, "delivered at oslo, counted on both sides", func() bool {
		return outState(osl.Agent, res.ID) == localapi.InDelivered &&
			metricstest.Scrape(t, oslM)[`kurer_agent_state_changes_total{direction="in",state="delivered"}`] == 1 &&
			metricstest.Scrape(t, trM)[`kurer_agent_state_changes_total{direction="out",state="received"}`] == 1
	})
	elapsed := time.Since(start).Seconds()

	trWant := map[string]float64{
		"kurer_agent_outbox_depth":                                          0,
		"kurer_agent_upload_retries_total":                                  0,
		`kurer_agent_state_changes_total{direction="out",state="queued"}`:   1,
		`kurer_agent_state_changes_total{direction="out",state="sent"}`:     1,
		`kurer_agent_state_changes_total{direction="out",state="received"}`: 1,
		`kurer_agent_messages{direction="out",state="received"}`:            1,
		"kurer_agent_end_to_end_seconds_count":                              1,
		`kurer_agent_end_to_end_seconds_bucket{le="+Inf"}`:                  1,
	}
	oslWant := map[string]float64{
		"kurer_agent_inbox_depth":                                           0,
		"kurer_agent_adapter_retries_total":                                 float64(rec.callCount() - 1),
		`kurer_agent_state_changes_total{direction="in",state="stored"}`:    1,
		`kurer_agent_state_changes_total{direction="in",state="delivered"}`: 1,
		`kurer_agent_messages{direction="in",state="delivered"}`:            1,
	}
	for name, c := range map[string]struct {
		base string
		want map[string]float64
	}{"trondheim": {trM, trWant}, "oslo": {oslM, oslWant}} {
		m := metricstest.Scrape(t, c.base)
		for series, want := range c.want {
			got, ok := m[series]
			if !ok {
				t.Errorf("%s: no series %s", name, series)
			} else if got != want {
				t.Errorf("%s: %s = %v, want %v", name, series, got, want)
			}
		}
	}
	m := metricstest.Scrape(t, trM)
	if sum := m["kurer_agent_end_to_end_seconds_sum"]; sum <= 0 || sum > elapsed {
		t.Errorf("end-to-end latency sum %v s, want in (0, %v]", sum, elapsed)
	}

	// Without the gateway: not ready (still healthy), and a new case waits
	// in the outbox with its failed uploads counted.
	n.StopGateway()
	agenttest.Poll(t, "readyz unavailable", func() bool {
		return httpStatus(t, trM+localapi.PathReady) == http.StatusServiceUnavailable && !tr.Agent.Ready()
	})
	if code := httpStatus(t, trM+localapi.PathHealth); code != http.StatusOK {
		t.Fatalf("healthz without the gateway: %d", code)
	}
	res2, err := tr.Agent.Send(t.Context(), exampleCase(t)) // the receiver is cached
	if err != nil {
		t.Fatalf("send without the gateway: %v", err)
	}
	agenttest.Poll(t, "upload retries", func() bool {
		m := metricstest.Scrape(t, trM)
		return m["kurer_agent_upload_retries_total"] >= 1 && m["kurer_agent_outbox_depth"] == 1 &&
			m[`kurer_agent_messages{direction="out",state="queued"}`] == 1
	})
	if s := outState(tr.Agent, res2.ID); s != localapi.StateQueued {
		t.Fatalf("case sent without the gateway: state %q, want queued", s)
	}
}

// TestLocalAPIUnixSocket serves Trondheim's local API on a unix socket
// that only its owner may use, and sends a case through the Go client
// over it to Oslo.
func TestLocalAPIUnixSocket(t *testing.T) {
	// Socket paths are limited to ~100 bytes; t.TempDir can be longer.
	dir, err := os.MkdirTemp("", "ka")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "agent.sock")
	n := agenttest.NewNetworkSetup(t, agenttest.Setup{Config: map[string]agenttest.ConfigFunc{
		"trondheim": func(_ *agenttest.Network, c *agent.Config) { c.LocalAPI.Listen = "unix:" + sock },
	}}, "trondheim", "oslo")
	tr, osl := n.Nodes["trondheim"], n.Nodes["oslo"]
	if tr.URL != "unix://"+sock {
		t.Fatalf("local URL %q, want unix://%s", tr.URL, sock)
	}
	fi, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm()&0o007 != 0 {
		t.Fatalf("socket mode %v: want a socket others cannot use", fi.Mode())
	}

	c, err := localapi.NewClient("unix://"+sock, agenttest.Token)
	if err != nil {
		t.Fatal(err)
	}
	agenttest.Poll(t, "ready over the socket", func() bool { return c.Ready(t.Context()) == nil })
	stranger, err := localapi.NewClient("unix://"+sock, "not-the-token-0123456789")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stranger.List(t.Context(), localapi.DirectionOut, "", 10); errs.CodeOf(err) != errs.Unauthenticated {
		t.Fatalf("wrong token over the socket: %v", err)
	}
	res, err := c.Send(t.Context(), sendRequest(exampleCase(t)))
	if err != nil {
		t.Fatalf("send over the socket: %v", err)
	}
	agenttest.Poll(t, "received, seen over the socket", func() bool {
		d, err := c.Message(t.Context(), res.ID)
		return err == nil && d.State == localapi.StateReceived
	})
	// The sender sees "received" once Oslo's agent has stored the case; the
	// hand-off to Oslo's folder adapter follows on its own.
	agenttest.Poll(t, "oslo's inbox folder", func() bool { return len(inboxIDs(t, osl.Inbox)) > 0 })
	if ids := inboxIDs(t, osl.Inbox); len(ids) != 1 || ids[0] != res.ID {
		t.Fatalf("oslo's inbox %v, want %s", ids, res.ID)
	}
}

// TestSendAddressing addresses Oslo by org number, municipality number and
// account id (each arrives at Oslo's account), and refuses an unknown or
// malformed org number before anything is queued.
func TestSendAddressing(t *testing.T) {
	n := agenttest.NewNetwork(t, "trondheim", "oslo")
	tr, osl := n.Nodes["trondheim"], n.Nodes["oslo"]
	tests := []struct {
		name, to string
		want     errs.Code // "" for a case that arrives
	}{
		{"org number", "org:974760673", ""},
		{"municipality", "municipality:0301", ""},
		{"account id", osl.ID, ""},
		{"unknown org number", "org:999999999", errs.UnknownReceiver},
		{"short org number", "org:97476067", errs.BadRequest},
		{"org number with letters", "org:97476067x", errs.BadRequest},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := exampleCase(t)
			c.To = tc.to
			res, err := tr.Agent.Send(t.Context(), c)
			if tc.want != "" {
				if code := errs.CodeOf(err); code != tc.want {
					t.Fatalf("send to %q: code %q (%v), want %q", tc.to, code, err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatalf("send to %q: %v", tc.to, err)
			}
			agenttest.Poll(t, "received at sender", func() bool { return outState(tr.Agent, res.ID) == localapi.StateReceived })
			d, err := tr.Agent.Message(res.ID)
			if err != nil || d.To != osl.ID {
				t.Fatalf("sent to %q: %+v %v, want oslo's account %s", d.To, d, err, osl.ID)
			}
			agenttest.Poll(t, "oslo's inbox folder", func() bool {
				_, err := os.Stat(filepath.Join(osl.Inbox, res.ID, localapi.MetadataFile))
				return err == nil
			})
		})
	}
	// Only the three good sends travelled.
	if list, err := tr.Agent.List(localapi.DirectionOut, "", 100); err != nil || len(list) != 3 {
		t.Fatalf("trondheim's outgoing list %+v %v, want 3", list, err)
	}
}

// holdingAdapter is a case system that holds each delivery until
// released; when deaf it ignores its context while it waits.
type holdingAdapter struct {
	mu      sync.Mutex
	deaf    bool
	release chan struct{}
	calls   int
}

func (h *holdingAdapter) Name() string { return "holding" }

func (h *holdingAdapter) Run(ctx context.Context, _ adapter.Host) error {
	<-ctx.Done()
	return nil
}

func (h *holdingAdapter) Deliver(ctx context.Context, _ adapter.Host, _ adapter.Delivery) error {
	h.mu.Lock()
	h.calls++
	deaf, release := h.deaf, h.release
	h.mu.Unlock()
	if deaf {
		<-release
		return nil
	}
	select {
	case <-release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// hold makes the next deliveries wait for the returned release.
func (h *holdingAdapter) hold(deaf bool) (release func()) {
	ch := make(chan struct{})
	h.mu.Lock()
	h.deaf, h.release, h.calls = deaf, ch, 0
	h.mu.Unlock()
	return sync.OnceFunc(func() { close(ch) })
}

func (h *holdingAdapter) called() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.calls > 0
}

var _ adapter.Receiver = (*holdingAdapter)(nil)

// TestShutdownBoundedWithDeliveryInFlight stops Oslo while a delivery sits
// at its case system: Run returns within shutdown_timeout whether the
// adapter honours its context or not, and after a restart the message is
// delivered.
func TestShutdownBoundedWithDeliveryInFlight(t *testing.T) {
	const timeout = time.Second
	h := &holdingAdapter{}
	n := agenttest.NewNetworkSetup(t, agenttest.Setup{
		Options:     map[string][]agent.Option{"oslo": {agent.WithAdapters(h)}},
		OwnReceiver: map[string]bool{"oslo": true},
		Config: map[string]agenttest.ConfigFunc{"oslo": func(_ *agenttest.Network, c *agent.Config) {
			c.ShutdownTimeout = timeout
		}},
	}, "trondheim", "oslo")
	tr, osl := n.Nodes["trondheim"], n.Nodes["oslo"]
	for _, tc := range []struct {
		name string
		deaf bool
	}{{"adapter honours its context", false}, {"adapter ignores its context", true}} {
		t.Run(tc.name, func(t *testing.T) {
			release := h.hold(tc.deaf)
			t.Cleanup(release) // before the network stops (cleanups run last first)
			res, err := tr.Agent.Send(t.Context(), exampleCase(t))
			if err != nil {
				t.Fatal(err)
			}
			agenttest.Poll(t, "delivery under way", h.called)
			agenttest.Poll(t, "received at sender", func() bool { return outState(tr.Agent, res.ID) == localapi.StateReceived })

			begin := time.Now()
			if err := n.Stop("oslo"); err != nil {
				t.Fatalf("oslo's Run: %v", err)
			}
			if took := time.Since(begin); took > timeout+2*time.Second {
				t.Fatalf("shutdown took %v with shutdown_timeout %v", took, timeout)
			}

			release()
			n.Restart("oslo")
			agenttest.Poll(t, "delivered after restart", func() bool { return outState(osl.Agent, res.ID) == localapi.InDelivered })
		})
	}
}

// sendRequest is c as a local API client request.
func sendRequest(c adapter.Case) localapi.SendRequest {
	req := localapi.SendRequest{Type: c.Type, To: c.To, ID: c.ID, Metadata: c.Metadata}
	for _, f := range c.Files {
		p := f.Path
		req.Files = append(req.Files, localapi.SendFile{Name: f.Name, Size: -1,
			Open: func() (io.ReadCloser, error) { return os.Open(p) }})
	}
	return req
}

// httpStatus GETs url and gives its status code (0 when unreachable).
func httpStatus(t *testing.T, url string) int {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

// TestStopClosesGatewayConnections: agents that stop close their kept
// connections to the gateway. A connection the gateway sees open holds
// up its graceful shutdown, one that never carried a request (a client
// dials ahead while another request frees a connection) for 5 seconds.
func TestStopClosesGatewayConnections(t *testing.T) {
	n := agenttest.NewNetwork(t, "trondheim", "oslo")
	tr := n.Nodes["trondheim"]
	metrics := "http://" + n.Gateway.MetricsAddr().String()
	open := func() float64 { return metricstest.Scrape(t, metrics)["kurer_gateway_connections_open"] }
	// A case each way, so each agent has uploaded, polled and acked.
	res, err := tr.Agent.Send(t.Context(), exampleCase(t))
	if err != nil {
		t.Fatal(err)
	}
	agenttest.Poll(t, "received at sender", func() bool { return outState(tr.Agent, res.ID) == localapi.StateReceived })
	if n := open(); n < 2 {
		t.Fatalf("%v connections open to the gateway, want at least one per agent", n)
	}
	for _, name := range []string{"trondheim", "oslo"} {
		if err := n.Stop(name); err != nil {
			t.Fatal(err)
		}
	}
	agenttest.Poll(t, "connections closed", func() bool { return open() == 0 })
}
