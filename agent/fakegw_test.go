package agent

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/kurer/kurer/gateway/api"
	"github.com/kurer/kurer/internal/errs"
)

// memNet is an in-memory broker behind the Gateway interface, for unit
// tests of the agent's logic (the integration tests in agenttest use the
// real gateway over TLS). It keeps the gateway's observable semantics:
// idempotent submit by id+digest, leased mailbox items offered again until
// acked, notices to the sender's mailbox, Range-style resumed downloads.
type memNet struct {
	mu       sync.Mutex
	key      []byte
	accounts map[string]api.Account
	msgs     map[string]*memMsg
	boxes    map[string][]*memItem // account -> items
	changed  chan struct{}
	lease    time.Duration
	// submitFail, when > 0, fails that many submits with errs.Unavailable.
	submitFail int
	submits    int
}

type memMsg struct {
	r    api.Routing
	body []byte
}

type memItem struct {
	it    api.MailboxItem
	until time.Time
	acked bool
}

func newMemNet() *memNet {
	return &memNet{key: []byte("test-notice-key"), accounts: map[string]api.Account{}, msgs: map[string]*memMsg{},
		boxes: map[string][]*memItem{}, changed: make(chan struct{}), lease: 2 * time.Second}
}

func (n *memNet) notifyLocked() {
	close(n.changed)
	n.changed = make(chan struct{})
}

func (n *memNet) sign(c api.NoticeClaims) string {
	data, _ := json.Marshal(c)
	p := base64.RawURLEncoding.EncodeToString(data)
	m := hmac.New(sha256.New, n.key)
	m.Write([]byte(p))
	return "fake." + p + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func (n *memNet) noticeLocked(event string, r api.Routing, reason string) string {
	c := api.NoticeClaims{Issuer: "mem", ID: uuid.NewString(), Event: event, MessageID: r.ID, From: r.From, To: r.To,
		Type: r.Type, Digest: r.Digest, Reason: reason, At: time.Now().UTC(), IssuedAt: time.Now().Unix()}
	jws := n.sign(c)
	if event != api.EventAccepted {
		n.boxes[r.From] = append(n.boxes[r.From], &memItem{it: api.MailboxItem{Kind: api.KindNotice,
			Routing: api.Routing{ID: c.ID, From: r.From, To: r.From, Type: r.Type}, Notice: jws}})
		n.notifyLocked()
	}
	return jws
}

// gw returns the Gateway view of account self.
func (n *memNet) gw(self string) *memGW { return &memGW{n: n, self: self} }

type memGW struct {
	n    *memNet
	self string
}

var _ Gateway = (*memGW)(nil)

func (g *memGW) Submit(ctx context.Context, r api.Routing, body *os.File) (api.SubmitResponse, error) {
	data, err := io.ReadAll(body)
	if err != nil {
		return api.SubmitResponse{}, err
	}
	n := g.n
	n.mu.Lock()
	defer n.mu.Unlock()
	n.submits++
	if n.submitFail > 0 {
		n.submitFail--
		return api.SubmitResponse{}, errs.Newf(errs.Unavailable, "injected")
	}
	sum := sha256.Sum256(data)
	if d := "sha-256=:" + base64.StdEncoding.EncodeToString(sum[:]) + ":"; d != r.Digest || int64(len(data)) != r.Size {
		return api.SubmitResponse{}, errs.Newf(errs.DigestMismatch, "digest")
	}
	if r.From != g.self {
		return api.SubmitResponse{}, errs.Newf(errs.Forbidden, "not yourself")
	}
	if _, ok := n.accounts[r.To]; !ok {
		return api.SubmitResponse{}, errs.Newf(errs.UnknownReceiver, "")
	}
	if m, ok := n.msgs[r.ID]; ok {
		if m.r.Digest != r.Digest {
			return api.SubmitResponse{}, errs.Newf(errs.Conflict, "")
		}
		return api.SubmitResponse{ID: r.ID, State: "accepted", Receipt: n.sign(api.NoticeClaims{Event: api.EventAccepted, MessageID: r.ID, From: r.From, To: r.To, At: time.Now().UTC()})}, nil
	}
	n.msgs[r.ID] = &memMsg{r: r, body: data}
	n.boxes[r.To] = append(n.boxes[r.To], &memItem{it: api.MailboxItem{Kind: api.KindMessage, Routing: r}})
	n.notifyLocked()
	return api.SubmitResponse{ID: r.ID, State: "accepted", Receipt: n.noticeLocked(api.EventAccepted, r, "")}, nil
}

func (g *memGW) Poll(ctx context.Context, wait time.Duration, max int) ([]api.MailboxItem, error) {
	deadline := time.Now().Add(wait)
	for {
		n := g.n
		n.mu.Lock()
		var out []api.MailboxItem
		now := time.Now()
		for _, it := range n.boxes[g.self] {
			if it.acked || it.until.After(now) || len(out) >= max {
				continue
			}
			it.until = now.Add(n.lease)
			it.it.Attempt++
			it.it.LeaseUntil = it.until
			out = append(out, it.it)
		}
		ch := n.changed
		n.mu.Unlock()
		if len(out) > 0 || !time.Now().Before(deadline) {
			return out, nil
		}
		t := time.NewTimer(min(time.Until(deadline), 200*time.Millisecond))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-ch:
		case <-t.C:
		}
		t.Stop()
	}
}

func (g *memGW) Download(ctx context.Context, id string, dst *os.File) error {
	g.n.mu.Lock()
	m, ok := g.n.msgs[id]
	g.n.mu.Unlock()
	if !ok || m.r.To != g.self {
		return errs.Newf(errs.NotFound, "")
	}
	st, err := dst.Stat()
	if err != nil {
		return err
	}
	off := st.Size()
	if off > int64(len(m.body)) {
		off = 0
		if err := dst.Truncate(0); err != nil {
			return err
		}
	}
	_, err = dst.WriteAt(m.body[off:], off)
	return err
}

func (g *memGW) finish(id, event string, reason string) error {
	n := g.n
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, it := range n.boxes[g.self] {
		if it.it.Routing.ID == id && !it.acked {
			it.acked = true
			if it.it.Kind == api.KindMessage {
				n.noticeLocked(event, it.it.Routing, reason)
			}
			return nil
		}
	}
	for _, it := range n.boxes[g.self] {
		if it.it.Routing.ID == id {
			return nil // already done: idempotent
		}
	}
	return errs.Newf(errs.NotFound, "")
}

func (g *memGW) Ack(ctx context.Context, id string) error {
	return g.finish(id, api.EventDelivered, "")
}

func (g *memGW) Reject(ctx context.Context, id string, r api.RejectRequest) error {
	return g.finish(id, api.EventRejected, r.Reason)
}

func (g *memGW) Lookup(ctx context.Context, id string) (api.Account, error) {
	g.n.mu.Lock()
	defer g.n.mu.Unlock()
	a, ok := g.n.accounts[id]
	if !ok {
		return api.Account{}, errs.Newf(errs.NotFound, "")
	}
	return a, nil
}

func (g *memGW) Find(ctx context.Context, q, msgType string) (api.Account, error) {
	kind, val, _ := strings.Cut(q, ":")
	g.n.mu.Lock()
	defer g.n.mu.Unlock()
	for _, a := range g.n.accounts {
		if (kind == "municipality" && a.Municipality == val) || (kind == "org" && a.OrgNumber == val) {
			for _, t := range a.Types {
				if t == msgType {
					return a, nil
				}
			}
		}
	}
	return api.Account{}, errs.Newf(errs.NotFound, "")
}

func (g *memGW) VerifyNotice(jws string) (api.NoticeClaims, error) {
	parts := strings.Split(jws, ".")
	if len(parts) != 3 || parts[0] != "fake" {
		return api.NoticeClaims{}, errors.New("bad notice")
	}
	m := hmac.New(sha256.New, g.n.key)
	m.Write([]byte(parts[1]))
	sig, _ := base64.RawURLEncoding.DecodeString(parts[2])
	if !hmac.Equal(sig, m.Sum(nil)) {
		return api.NoticeClaims{}, errors.New("bad notice signature")
	}
	data, _ := base64.RawURLEncoding.DecodeString(parts[1])
	var c api.NoticeClaims
	return c, json.Unmarshal(data, &c)
}
