package agent

import (
	"context"
	"time"

	"github.com/kurer/kurer/agent/adapter"
	"github.com/kurer/kurer/agent/localapi"
)

// adapterDelivery is the adapter's view of an incoming message.
type adapterDelivery = adapter.Delivery

// host is the agent as adapters see it.
type host struct{ a *Agent }

var _ adapter.Host = (*host)(nil)

func (h *host) Send(ctx context.Context, c adapter.Case) (localapi.SendResponse, error) {
	return h.a.Send(ctx, c)
}

func (h *host) Message(ctx context.Context, id string) (localapi.MessageDetail, error) {
	return h.a.Message(id)
}

func (h *host) Events(ctx context.Context, after uint64, wait time.Duration) (localapi.EventsResponse, error) {
	return h.a.Events(ctx, after, wait)
}

func (h *host) Processed(ctx context.Context, id string) error { return h.a.Processed(ctx, id) }

func (h *host) Rejected(ctx context.Context, id string, reasons []localapi.Reason) error {
	return h.a.Rejected(ctx, id, reasons)
}
