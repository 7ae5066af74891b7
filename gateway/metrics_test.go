package gateway_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/kurer/kurer/gateway/gatewaytest"
	"github.com/kurer/kurer/internal/metricstest"
)

// TestMetricsByValue: the operator's metrics after one delivered and one
// waiting message say so, and the store writer's counters move.
func TestMetricsByValue(t *testing.T) {
	e := gatewaytest.New(t, nil)
	oslo, bergen := e.Client("oslo"), e.Client("bergen")
	body := gatewaytest.RandBytes(1024)
	var ids []string
	for range 2 {
		r := e.Routing("oslo", "bergen", body)
		if _, err := oslo.Submit(t.Context(), r, bytes.NewReader(body)); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, r.ID)
	}
	items := gatewaytest.PollUntil(t, bergen, 2)
	if err := bergen.Ack(t.Context(), items[0].Routing.ID); err != nil {
		t.Fatal(err)
	}
	m := metricstest.Scrape(t, "http://"+e.Srv.MetricsAddr().String())
	typ := gatewaytest.MessageType
	bergenID, osloID := e.IDs["bergen"], e.IDs["oslo"]
	for series, want := range map[string]float64{
		`kurer_gateway_messages{state="delivered",type="` + typ + `"}`:          1,
		`kurer_gateway_messages{state="leased",type="` + typ + `"}`:             1,
		`kurer_gateway_transitions_total{state="accepted",type="` + typ + `"}`:  2,
		`kurer_gateway_transitions_total{state="delivered",type="` + typ + `"}`: 1,
		`kurer_gateway_mailbox_depth{account="` + bergenID + `"}`:               1, // the leased one
		`kurer_gateway_mailbox_depth{account="` + osloID + `"}`:                 3, // two accepted notices, one delivered
		`kurer_gateway_delivery_latency_seconds_count`:                          1,
	} {
		if got, ok := m[series]; !ok || got != want {
			t.Errorf("%s = %v (present %v), want %v", series, got, ok, want)
		}
	}
	if m[`kurer_gateway_agent_last_seen_timestamp_seconds{account="`+bergenID+`"}`] <= 0 {
		t.Error("no last-seen time for bergen's agent")
	}
	commits, updates := m["kurer_gateway_store_commits_total"], m["kurer_gateway_store_updates_total"]
	// At least: 2 accepts, 1 lease, 1 ack (plus the catalog and tokens).
	if commits < 1 || updates < 4 || updates < commits {
		t.Errorf("store commits %v, updates %v", commits, updates)
	}
	if _, ok := m["kurer_gateway_store_writer_busy_seconds_total"]; !ok {
		t.Error("no store writer busy time")
	}
	// Each commit writes at least a page, and spends time writing.
	if b := m["kurer_gateway_store_written_bytes_total"]; b < commits*4096 {
		t.Errorf("store written bytes %v for %v commits, want >= a 4 KiB page each", b, commits)
	}
	// Two agents' clients keep their connections open between requests.
	if o, n := m["kurer_gateway_connections_open"], m["kurer_gateway_connections_opened_total"]; o < 2 || n < o {
		t.Errorf("connections open %v, opened %v; want at least the two clients' kept open", o, n)
	}
	if w := m["kurer_gateway_store_write_seconds_total"]; w <= 0 {
		t.Errorf("store write seconds %v, want > 0", w)
	}
	// The audit records shipped: 3 accounts created, 2 accepted, 2
	// leased, 1 delivered.
	if err := e.Srv.FlushAudit(t.Context()); err != nil {
		t.Fatal(err)
	}
	m = metricstest.Scrape(t, "http://"+e.Srv.MetricsAddr().String())
	if got := m["kurer_gateway_audit_records_total"]; got != 8 {
		t.Errorf("kurer_gateway_audit_records_total = %v, want 8", got)
	}
	if got, ok := m["kurer_gateway_audit_errors_total"]; !ok || got != 0 {
		t.Errorf("kurer_gateway_audit_errors_total = %v (present %v), want 0", got, ok)
	}
	if at := m["kurer_gateway_audit_current_timestamp_seconds"]; time.Since(time.Unix(int64(at), 0)) > time.Minute {
		t.Errorf("kurer_gateway_audit_current_timestamp_seconds = %v, want about now", at)
	}
}
