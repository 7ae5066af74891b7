// Package gwload drives a gateway with the API traffic of many agents, for
// the gateway's throughput figures: senders submit envelopes (each accept
// fsynced), receivers long-poll their mailboxes, take small envelopes
// inline or download them, and ack what a poll brought (messages, and the
// gateway's notices) in one request. It measures messages/s of
// accepted+delivered+acked and the accept latency.
//
// The sealing and opening of envelopes is not part of it: that is the
// agents' work, on their own machines. The gateway's Go benchmark and
// `kurer bench gateway` both run it.
package gwload

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/kurer/kurer/gateway/api"
	"github.com/kurer/kurer/gateway/client"
)

// InlineLimit is the largest envelope the receivers ask to get inline in
// the poll answer, as agents do.
const InlineLimit = 64 << 10

// maxInFlight bounds the submits in flight in an open loop: far above what
// a paced run needs, it only keeps a gateway that stopped answering from
// growing the load generator without bound.
const maxInFlight = 1024

// Account is one account the load runs as.
type Account struct {
	ID string
	// NewClient returns a new client of the account's, with its own
	// connections; pollInline is the client's PollInline.
	NewClient func(pollInline int64) (*client.Client, error)
}

// Config is one run.
type Config struct {
	// Senders submit; Receivers poll and ack. With the same accounts on
	// both sides (as agents are), each sender sends to the other accounts
	// in turn and the receivers ack the gateway's notices too; otherwise
	// every message goes to Receivers[0].
	Senders, Receivers []Account
	// Workers: sending and receiving workers each. Worker w sends as
	// Senders[w mod len] and polls for Receivers[w mod len].
	Workers int
	// Messages to send.
	Messages int
	// Rate: messages/s offered in an open loop; 0 for a closed loop (each
	// sender submits when its last submit is answered).
	Rate float64
	// Body is every envelope's ciphertext; Type its message type.
	Body []byte
	Type string
	// DownloadDir takes envelopes that do not come inline (one file per
	// receiving worker).
	DownloadDir string
	// Now is the clock for the routing's expiry (default time.Now).
	Now func() time.Time
	// Started is called once every client holds its access token, right
	// before the first submit: the caller's start of its own counters.
	Started func()
	// AckTimeout bounds the wait for the last acks after the last submit
	// (default 2 minutes).
	AckTimeout time.Duration
}

// Result is what a run measured.
type Result struct {
	Messages int
	Elapsed  time.Duration // first submit -> last message acked
	PerSec   float64
	// Accept latency (submit -> accepted receipt; in an open loop from
	// each message's due time). Sorted.
	Latencies []time.Duration
	// NoticesAcked: notices the receivers acked (with Senders ==
	// Receivers, an "accepted" and a "delivered" per message).
	NoticesAcked int64
	// Polls that brought items, each followed by one ack request.
	Polls int64
}

// Percentile returns the p-quantile (0..1) of the accept latency.
func (r Result) Percentile(p float64) time.Duration {
	if len(r.Latencies) == 0 {
		return 0
	}
	return r.Latencies[min(len(r.Latencies)-1, int(p*float64(len(r.Latencies))))]
}

// Run runs c against the gateway the accounts' clients talk to.
func Run(ctx context.Context, c Config) (Result, error) {
	if len(c.Senders) == 0 || len(c.Receivers) == 0 || c.Workers < 1 || c.Messages < 1 || len(c.Body) == 0 {
		return Result{}, errors.New("gwload: want senders, receivers, workers, messages and a body")
	}
	many := len(c.Receivers) > 1
	if many && !sameAccounts(c.Senders, c.Receivers) {
		return Result{}, errors.New("gwload: several receivers must be the senders")
	}
	now := c.Now
	if now == nil {
		now = time.Now
	}
	ackTimeout := c.AckTimeout
	if ackTimeout <= 0 {
		ackTimeout = 2 * time.Minute
	}
	ctx, fail := context.WithCancelCause(ctx)
	defer fail(nil)

	// Every worker connects and fetches its access token (an RSA
	// signature) before the clock starts, as long-running agents have;
	// receivers take small envelopes inline in the poll answer, as agents
	// do.
	senders, err := connect(ctx, c.Senders, c.Workers, 0)
	if err != nil {
		return Result{}, err
	}
	defer closeAll(senders)
	receivers, err := connect(ctx, c.Receivers, c.Workers, InlineLimit)
	if err != nil {
		return Result{}, err
	}
	defer closeAll(receivers)

	var (
		res     Result
		acked   = newAckCount(int64(c.Messages))
		notices atomic.Int64
		polls   atomic.Int64
		total   = int64(c.Messages)
		recvWG  sync.WaitGroup
	)
	rctx, rcancel := context.WithCancel(ctx)
	defer func() { rcancel(); recvWG.Wait() }()
	for w := range receivers {
		recvWG.Add(1)
		go func() {
			defer recvWG.Done()
			err := receive(rctx, receivers[w], c.DownloadDir, many, func(msgs, nots int64, polled bool) {
				if polled {
					polls.Add(1)
				}
				notices.Add(nots)
				acked.add(msgs)
			}, acked.reached)
			if err != nil {
				fail(err)
			}
		}()
	}

	// Every sender's routing template: the digest of the (same) body once
	// per sender, as an agent computes it while sealing on its own machine.
	sum := sha256.Sum256(c.Body)
	digest := "sha-256=:" + base64.StdEncoding.EncodeToString(sum[:]) + ":"
	sent := make([]atomic.Int64, len(senders))
	var (
		latMu sync.Mutex
		lats  = make([]time.Duration, 0, c.Messages)
	)
	submit := func(w int, t0 time.Time) error {
		from := w % len(c.Senders)
		to := c.Receivers[0].ID
		if many {
			// To each of the other accounts in turn.
			k := int(sent[w].Add(1)) % (len(c.Receivers) - 1)
			to = c.Receivers[(from+1+k)%len(c.Receivers)].ID
		}
		r := api.Routing{
			ID:   uuid.Must(uuid.NewV7()).String(), // as agents make them
			From: c.Senders[from].ID, To: to, Type: c.Type,
			Expires: now().Add(24 * time.Hour).UTC().Truncate(time.Second),
			Size:    int64(len(c.Body)), Digest: digest,
		}
		if _, err := senders[w].Submit(ctx, r, bytes.NewReader(c.Body)); err != nil {
			return fmt.Errorf("gwload: submit: %w", err)
		}
		d := time.Since(t0)
		latMu.Lock()
		lats = append(lats, d)
		latMu.Unlock()
		return nil
	}

	if c.Started != nil {
		c.Started()
	}
	start := time.Now()
	var wg sync.WaitGroup
	if c.Rate > 0 {
		// Open loop, as many agents send: message i is sent when it is
		// due (start + i/rate) whether or not earlier ones have been
		// answered, and its latency counts from then. A closed loop of
		// a few senders would stop sending during a stall of the disk
		// and then catch up only as fast as those few can, which
		// measures the load generator, not the gateway.
		sem := make(chan struct{}, maxInFlight)
	pace:
		for i := range total {
			t0 := start.Add(time.Duration(float64(i) / c.Rate * float64(time.Second)))
			select {
			case <-time.After(time.Until(t0)):
			case <-ctx.Done():
				break pace
			}
			sem <- struct{}{}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				if err := submit(int(i)%len(senders), t0); err != nil {
					fail(err)
				}
			}()
		}
	} else {
		var next atomic.Int64
		for w := range senders {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for next.Add(1) <= total && ctx.Err() == nil {
					if err := submit(w, time.Now()); err != nil {
						fail(err)
						return
					}
				}
			}()
		}
	}
	wg.Wait()
	select {
	case <-acked.done:
	case <-ctx.Done():
		return Result{}, context.Cause(ctx)
	case <-time.After(ackTimeout):
		return Result{}, fmt.Errorf("gwload: only %d of %d acked after %s", acked.n.Load(), total, ackTimeout)
	}
	res.Elapsed = time.Since(start)
	res.Messages = c.Messages
	res.PerSec = float64(total) / res.Elapsed.Seconds()
	slices.Sort(lats)
	res.Latencies = lats
	res.NoticesAcked = notices.Load()
	res.Polls = polls.Load()
	return res, nil
}

// ackCount counts acked messages towards total; done is closed once the
// count reaches it.
type ackCount struct {
	n     atomic.Int64
	total int64
	done  chan struct{}
}

func newAckCount(total int64) *ackCount {
	return &ackCount{total: total, done: make(chan struct{})}
}

// add counts k more. The add that crosses total closes done, once: an ack
// repeated after a lease ran out (the gateway answers it as done) counts
// again, so the count may jump past total.
func (a *ackCount) add(k int64) {
	if k <= 0 {
		return
	}
	if n := a.n.Add(k); n >= a.total && n-k < a.total {
		close(a.done)
	}
}

func (a *ackCount) reached() bool { return a.n.Load() >= a.total }

// connect returns workers clients, worker w's of accounts[w mod len],
// each holding its access token.
func connect(ctx context.Context, accounts []Account, workers int, pollInline int64) ([]*client.Client, error) {
	cs := make([]*client.Client, workers)
	for w := range cs {
		cl, err := accounts[w%len(accounts)].NewClient(pollInline)
		if err != nil {
			closeAll(cs[:w])
			return nil, err
		}
		cs[w] = cl
		if _, err := cl.Token(ctx); err != nil {
			closeAll(cs[:w+1])
			return nil, fmt.Errorf("gwload: token: %w", err)
		}
	}
	return cs, nil
}

// closeAll closes the clients' kept connections.
func closeAll(cs []*client.Client) {
	for _, cl := range cs {
		cl.CloseIdleConnections()
	}
}

// receive is one receiving worker: it polls, takes the poll's messages
// (inline, or downloaded into a file of its own) and acks them with the
// poll's notices in one request, until done. report gets the messages and
// notices acked per request.
func receive(ctx context.Context, rc *client.Client, dlDir string, ackNotices bool, report func(msgs, notices int64, polled bool), done func() bool) error {
	f, err := os.CreateTemp(dlDir, "gwload-dl")
	if err != nil {
		return fmt.Errorf("gwload: %w", err)
	}
	defer func() { _ = f.Close(); _ = os.Remove(f.Name()) }()
	for !done() && ctx.Err() == nil {
		items, err := rc.Poll(ctx, time.Second, 8)
		if err != nil {
			continue // a stall or a restart: the client retries, so do we
		}
		var msgs, noticeIDs []string
		for _, it := range items {
			switch {
			case it.Kind == api.KindNotice && ackNotices:
				// An agent verifies the notice (on its own machine)
				// and acks it with the poll's messages.
				noticeIDs = append(noticeIDs, it.Routing.ID)
			case it.Kind == api.KindMessage:
				// Inline content came with the poll, its digest
				// checked by the client; it is not written anywhere:
				// the agent's spool is on the agent's machine.
				if it.Content == nil {
					if err := f.Truncate(0); err != nil {
						return fmt.Errorf("gwload: %w", err)
					}
					if err := rc.Download(ctx, it.Routing.ID, f); err != nil {
						continue
					}
				}
				msgs = append(msgs, it.Routing.ID)
			}
		}
		if len(msgs)+len(noticeIDs) == 0 {
			continue
		}
		failed, err := rc.AckMany(ctx, append(msgs[:len(msgs):len(msgs)], noticeIDs...))
		if err != nil {
			continue
		}
		// An item whose lease ran out (a stall) is not acked here; it
		// comes again and is counted then.
		report(ackedOf(msgs, failed), ackedOf(noticeIDs, failed), true)
	}
	return nil
}

// ackedOf counts the ids of an ack request that are not among its failed.
func ackedOf(ids []string, failed map[string]error) int64 {
	var n int64
	for _, id := range ids {
		if _, bad := failed[id]; !bad {
			n++
		}
	}
	return n
}

func sameAccounts(a, b []Account) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].ID != b[i].ID {
			return false
		}
	}
	return true
}
