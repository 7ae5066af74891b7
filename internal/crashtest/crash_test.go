package crashtest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

// TestCrashSuite: a gateway and three agents as real processes exchange
// messages of mixed sizes through the local API; the harness SIGKILLs the
// gateway and each agent at random moments and restarts them on the same
// data directory. Every message must arrive exactly once, byte for byte, and
// every sender must see received. The last line printed is the verdict.
func TestCrashSuite(t *testing.T) {
	messages, killsEach, window := 150, 2, 12*time.Second
	if full() {
		messages, killsEach, window = 2000, 5, 4*time.Minute
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewPCG(seed, 7))

	nw := startNet(t, 3, nil)
	msgs := make([]*msg, messages)
	for i := range msgs {
		from := r.IntN(3)
		to := (from + 1 + r.IntN(2)) % 3
		nfiles := 1 + r.IntN(2)
		sizes := make([]int64, nfiles)
		for j := range sizes {
			sizes[j] = mixedSize(r, full())
		}
		msgs[i] = newMsg(from, to, r.Uint64(), sizes...)
	}

	ctx, cancel := context.WithTimeout(t.Context(), map[bool]time.Duration{false: 80 * time.Second, true: 25 * time.Minute}[full()])
	defer cancel()

	// The killer: every process gets killsEach SIGKILLs at random moments
	// spread over the window, one at a time, each followed by a restart on
	// the same data directory and a wait for readiness.
	var kills int
	killerDone := make(chan struct{})
	go func() {
		defer close(killerDone)
		defer func() {
			if v := recover(); v != nil && v != errAbort {
				panic(v)
			}
		}()
		var plan []*proc
		for range killsEach {
			plan = append(plan, nw.allProc...)
		}
		r2 := rand.New(rand.NewPCG(seed, 11))
		r2.Shuffle(len(plan), func(i, j int) { plan[i], plan[j] = plan[j], plan[i] })
		gap := window / time.Duration(len(plan))
		for _, p := range plan {
			select {
			case <-ctx.Done():
				return
			case <-time.After(gap/2 + time.Duration(r2.Int64N(int64(gap)))):
			}
			nw.restart(ctx, p)
			kills++
		}
	}()

	// Senders: each agent sends its share, two at a time.
	var wg sync.WaitGroup
	errc := make(chan error, len(msgs))
	for from := range 3 {
		var mine []*msg
		for _, m := range msgs {
			if m.from == from {
				mine = append(mine, m)
			}
		}
		work := make(chan *msg)
		for range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for m := range work {
					if err := nw.send(ctx, m); err != nil {
						errc <- err
					}
				}
			}()
		}
		go func() {
			for _, m := range mine {
				work <- m
			}
			close(work)
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	<-killerDone
	if t.Failed() {
		t.FailNow()
	}
	if kills != killsEach*len(nw.allProc) {
		t.Fatalf("only %d of %d kills happened before the deadline", kills, killsEach*len(nw.allProc))
	}
	res := nw.settle(ctx, msgs, time.Until(deadline(ctx)))
	nw.checkGatewayAudit(msgs, res)
	for i, p := range res.problems {
		if i == 20 {
			t.Logf("... %d more", len(res.problems)-20)
			break
		}
		t.Log(p)
	}
	line := res.line(kills, len(msgs))
	if !res.ok() {
		t.Error("not every message arrived exactly once, intact, with its receipt")
	}
	fmt.Println(line)
}

func deadline(ctx context.Context) time.Time {
	d, ok := ctx.Deadline()
	if !ok {
		return time.Now().Add(time.Minute)
	}
	return d
}
