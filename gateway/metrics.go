package gateway

import (
	"context"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are the gateway's Prometheus metrics, on a registry of its own.
type metrics struct {
	reg          *prometheus.Registry
	transitions  *prometheus.CounterVec
	refusals     *prometheus.CounterVec
	authFailures *prometheus.CounterVec
	latency      prometheus.Histogram
	attempts     prometheus.Histogram
	released     prometheus.Counter
	auditErrors  prometheus.Counter
	auditShipped prometheus.Counter
	auditCurrent prometheus.Gauge
	requests     *prometheus.CounterVec
	duration     *prometheus.HistogramVec
	connsOpened  prometheus.Counter
	connsOpen    prometheus.Gauge

	seenMu   sync.Mutex
	lastSeen map[string]int64 // account -> unix seconds
}

func newMetrics(s *Server) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kurer_gateway_transitions_total", Help: "Message state transitions, by new state and message type.",
		}, []string{"state", "type"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kurer_gateway_submit_refusals_total", Help: "Submits refused, by error code.",
		}, []string{"code"}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kurer_gateway_auth_failures_total", Help: "Token requests refused, by error code.",
		}, []string{"code"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "kurer_gateway_delivery_latency_seconds", Help: "Time from accept to the receiver's ack.",
			Buckets: prometheus.ExponentialBuckets(0.005, 4, 12),
		}),
		attempts: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "kurer_gateway_delivery_attempts", Help: "Deliveries (leases) a message took until delivered or dead-lettered.",
			Buckets: []float64{1, 2, 3, 5, 10, 20},
		}),
		released: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kurer_gateway_lease_timeouts_total", Help: "Leases that ended without ack and returned the message to its mailbox.",
		}),
		auditErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kurer_gateway_audit_errors_total", Help: "Failed attempts to ship the audit journal to the audit log (the entries stay in the journal and are retried).",
		}),
		auditShipped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kurer_gateway_audit_records_total", Help: "Audit records shipped from the store's journal to the audit log.",
		}),
		auditCurrent: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kurer_gateway_audit_current_timestamp_seconds", Help: "Last time the audit log held everything the store's journal had (shipping is stalled when this stops moving).",
		}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kurer_gateway_http_requests_total", Help: "HTTP requests by route and status code.",
		}, []string{"route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "kurer_gateway_http_request_duration_seconds", Help: "HTTP request duration by route.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 10),
		}, []string{"route"}),
		connsOpened: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kurer_gateway_connections_opened_total", Help: "Connections accepted on the API listener (each a TLS handshake; agents keep theirs open, so a fast rise is churn).",
		}),
		connsOpen: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kurer_gateway_connections_open", Help: "Connections open on the API listener.",
		}),
		lastSeen: map[string]int64{},
	}
	m.reg.MustRegister(m.transitions, m.refusals, m.authFailures, m.latency, m.attempts, m.released,
		m.auditErrors, m.auditShipped, m.auditCurrent, m.requests, m.duration, m.connsOpened, m.connsOpen,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		&stateCollector{s: s, m: m})
	return m
}

func (m *metrics) transition(state, typ string) { m.transitions.WithLabelValues(state, typ).Inc() }

func (m *metrics) seen(account string, t time.Time) {
	m.seenMu.Lock()
	m.lastSeen[account] = t.Unix()
	m.seenMu.Unlock()
}

var (
	descMessages = prometheus.NewDesc("kurer_gateway_messages", "Message records by state and type (terminal ones until purged).", []string{"state", "type"}, nil)
	descDepth    = prometheus.NewDesc("kurer_gateway_mailbox_depth", "Items (messages and notices) waiting or leased, per mailbox.", []string{"account"}, nil)
	descOldest   = prometheus.NewDesc("kurer_gateway_mailbox_oldest_age_seconds", "Age of the oldest waiting or leased item, per mailbox.", []string{"account"}, nil)
	descCommits  = prometheus.NewDesc("kurer_gateway_store_commits_total", "Read-write transactions the store's writer committed (each fsynced).", nil, nil)
	descUpdates  = prometheus.NewDesc("kurer_gateway_store_updates_total", "Updates those transactions carried (group commit).", nil, nil)
	descBusy     = prometheus.NewDesc("kurer_gateway_store_writer_busy_seconds_total", "Time the store's single writer spent committing; its rate near 1 means writes queue.", nil, nil)
	descWritten  = prometheus.NewDesc("kurer_gateway_store_written_bytes_total", "Bytes of the pages the store's commits wrote (whole pages: the disk's real load).", nil, nil)
	descWriting  = prometheus.NewDesc("kurer_gateway_store_write_seconds_total", "Part of the writer's busy time spent writing pages and in fsync.", nil, nil)
	descSeen     = prometheus.NewDesc("kurer_gateway_agent_last_seen_timestamp_seconds", "Last authenticated request of an account's agent.", []string{"account"}, nil)
)

// stateCollector reads gauges from storage at scrape time.
type stateCollector struct {
	s *Server
	m *metrics
}

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descMessages
	ch <- descDepth
	ch <- descOldest
	ch <- descSeen
	ch <- descCommits
	ch <- descUpdates
	ch <- descBusy
	ch <- descWritten
	ch <- descWriting
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if counts, err := c.s.st.CountByState(ctx); err == nil {
		for state, byType := range counts {
			for typ, n := range byType {
				ch <- prometheus.MustNewConstMetric(descMessages, prometheus.GaugeValue, float64(n), state, typ)
			}
		}
	}
	now := c.s.now()
	if boxes, err := c.s.q.Mailboxes(ctx); err == nil {
		for _, b := range boxes {
			ch <- prometheus.MustNewConstMetric(descDepth, prometheus.GaugeValue, float64(b.Depth), b.Account)
			ch <- prometheus.MustNewConstMetric(descOldest, prometheus.GaugeValue, now.Sub(b.Oldest).Seconds(), b.Account)
		}
	}
	if st, ok := c.s.StoreStats(); ok {
		ch <- prometheus.MustNewConstMetric(descCommits, prometheus.CounterValue, float64(st.Commits))
		ch <- prometheus.MustNewConstMetric(descUpdates, prometheus.CounterValue, float64(st.Updates))
		ch <- prometheus.MustNewConstMetric(descBusy, prometheus.CounterValue, st.Busy.Seconds())
		ch <- prometheus.MustNewConstMetric(descWritten, prometheus.CounterValue, float64(st.Bytes))
		ch <- prometheus.MustNewConstMetric(descWriting, prometheus.CounterValue, st.Write.Seconds())
	}
	c.m.seenMu.Lock()
	for a, t := range c.m.lastSeen {
		ch <- prometheus.MustNewConstMetric(descSeen, prometheus.GaugeValue, float64(t), a)
	}
	c.m.seenMu.Unlock()
}

// statusRecorder captures the status code for metrics.
type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (r *statusRecorder) WriteHeader(code int) {
	if r.code == 0 {
		r.code = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(p []byte) (int, error) {
	if r.code == 0 {
		r.code = http.StatusOK
	}
	return r.ResponseWriter.Write(p)
}

func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// instrument counts requests by route pattern and status, and sets the
// default per-request deadlines (handlers that stream extend them).
func (s *Server) instrument(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rc := http.NewResponseController(w)
		_ = rc.SetReadDeadline(start.Add(s.cfg.BodyIdleTimeout))
		_ = rc.SetWriteDeadline(start.Add(s.cfg.BodyIdleTimeout))
		rec := &statusRecorder{ResponseWriter: w}
		h.ServeHTTP(rec, r)
		route := r.Pattern
		if route == "" {
			route = "unmatched"
		}
		code := rec.code
		if code == 0 {
			code = http.StatusOK
		}
		s.met.requests.WithLabelValues(route, strconv.Itoa(code)).Inc()
		s.met.duration.WithLabelValues(route).Observe(time.Since(start).Seconds())
	})
}

func (s *Server) metricsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.met.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", s.handleHealth)
	mux.HandleFunc("GET /readyz", s.handleReady)
	return mux
}

// connState counts the API listener's connections (http.Server.ConnState).
func (m *metrics) connState(_ net.Conn, st http.ConnState) {
	switch st {
	case http.StateNew:
		m.connsOpened.Inc()
		m.connsOpen.Inc()
	case http.StateClosed, http.StateHijacked:
		m.connsOpen.Dec()
	}
}
