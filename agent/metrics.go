package agent

import (
	"io"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/kurer/kurer/agent/localapi"
)

// metrics are the agent's Prometheus metrics, on the registry given to New.
type metrics struct {
	retries        prometheus.Counter
	deliverRetries prometheus.Counter
	duplicates     prometheus.Counter
	refused        *prometheus.CounterVec
	transitions    *prometheus.CounterVec
	latency        prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer, s *store) (*metrics, error) {
	m := &metrics{
		retries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kurer_agent_upload_retries_total", Help: "Failed uploads that will be retried."}),
		deliverRetries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kurer_agent_adapter_retries_total", Help: "Failed adapter deliveries that will be retried."}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kurer_agent_redeliveries_total", Help: "Incoming messages offered again that were already in the inbox."}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kurer_agent_refused_total", Help: "Incoming messages refused, by public code."}, []string{"code"}),
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kurer_agent_state_changes_total", Help: "State changes, by direction and new state."}, []string{"direction", "state"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "kurer_agent_end_to_end_seconds",
			Help:    "Time from queued to the receiver's mottatt receipt, in seconds.",
			Buckets: []float64{0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 1800, 3600},
		}),
	}
	depth := func(name, help string, kind byte) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 {
			ids, err := s.work(kind)
			if err != nil {
				return -1
			}
			return float64(len(ids))
		})
	}
	cs := []prometheus.Collector{
		m.retries, m.deliverRetries, m.duplicates, m.refused, m.transitions, m.latency,
		depth("kurer_agent_outbox_depth", "Outgoing messages waiting for upload.", workUpload),
		depth("kurer_agent_inbox_depth", "Incoming messages waiting for the adapter.", workDeliver),
		&stateCollector{s: s, desc: prometheus.NewDesc("kurer_agent_messages",
			"Messages in the store, by direction and state.", []string{"direction", "state"}, nil)},
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *metrics) queued(r *outRecord) { m.outState(r) }

func (m *metrics) outState(r *outRecord) {
	m.transitions.WithLabelValues(localapi.DirectionOut, r.State).Inc()
}

func (m *metrics) inState(r *inRecord) {
	m.transitions.WithLabelValues(localapi.DirectionIn, r.State).Inc()
}

// stateCollector counts the store's records per state at scrape time.
type stateCollector struct {
	s    *store
	desc *prometheus.Desc
}

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	counts, err := c.s.counts()
	if err != nil {
		return
	}
	for k, n := range counts {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n), k[0], k[1])
	}
}

// metricsHandler serves /metrics, /healthz and /readyz.
func (a *Agent) metricsHandler(reg *prometheus.Registry) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("GET "+localapi.PathHealth, func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET "+localapi.PathReady, a.handleReady)
	return mux
}
