package agent

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"time"

	"github.com/kurer/kurer/agent/adapter"
	"github.com/kurer/kurer/agent/localapi"
)

// adapterDelivery is the adapter's view of an incoming message.
type adapterDelivery = adapter.Delivery

// errAdapterPanic is the error a panic in adapter code becomes.
var errAdapterPanic = errors.New("adapter panicked")

// adapterCall runs f, adapter code (a municipality's integration, not
// ours), turning a panic into an error wrapping errAdapterPanic. The panic
// is logged at Error with the adapter's name, the value's type and the
// stack, never the value itself: an adapter's panic message can quote a
// payload or a file name.
func (a *Agent) adapterCall(name, what string, f func() error) (err error) {
	defer func() {
		if v := recover(); v != nil {
			a.log.Error("adapter panic", "adapter", name, "call", what, "panic_type", fmt.Sprintf("%T", v), "stack", string(debug.Stack()))
			err = fmt.Errorf("%s: %w", what, errAdapterPanic)
		}
	}()
	return f()
}

// deliverTo hands d to the receiving adapter. A panic in its Deliver is a
// failed delivery like any other: the message stays in the inbox and is
// offered again with backoff, and the agent and every other message go on.
func (a *Agent) deliverTo(ctx context.Context, d adapterDelivery) error {
	return a.adapterCall(a.receiver.Name(), "deliver", func() error { return a.receiver.Deliver(ctx, &host{a: a}, d) })
}

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
