package faultproxy

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// echoServer echoes every connection and reports, when one ends, how many
// bytes it received and the read error that ended it.
type echoServer struct {
	ln       net.Listener
	accepted atomic.Int64
	ended    chan echoEnd
	wg       sync.WaitGroup
}

type echoEnd struct {
	n   int64
	err error
}

func newEchoServer(tb testing.TB) *echoServer {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	s := &echoServer{ln: ln, ended: make(chan echoEnd, 64)}
	s.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.accepted.Add(1)
			s.wg.Go(func() {
				defer c.Close()
				var n int64
				buf := make([]byte, 16<<10)
				var rerr error
				for {
					m, err := c.Read(buf)
					n += int64(m)
					if m > 0 {
						if _, werr := c.Write(buf[:m]); werr != nil {
							rerr = werr
							break
						}
					}
					if err != nil {
						rerr = err
						break
					}
				}
				s.ended <- echoEnd{n: n, err: rerr}
			})
		}
	})
	tb.Cleanup(func() {
		ln.Close()
		s.wg.Wait()
	})
	return s
}

func newProxy(tb testing.TB, target string) *Proxy {
	tb.Helper()
	p, err := New(target)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { p.Close() })
	return p
}

func dial(tb testing.TB, addr string) *net.TCPConn {
	tb.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

func randomBytes(tb testing.TB, n int) []byte {
	tb.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		tb.Fatal(err)
	}
	return b
}

// roundTrip writes data and reads the same number of bytes back.
func roundTrip(tb testing.TB, c net.Conn, data []byte) {
	tb.Helper()
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(data)
		errc <- err
	}()
	got := make([]byte, len(data))
	if err := c.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		tb.Fatal(err)
	}
	if _, err := io.ReadFull(c, got); err != nil {
		tb.Fatalf("read echo: %v", err)
	}
	if err := <-errc; err != nil {
		tb.Fatalf("write: %v", err)
	}
	if !bytes.Equal(got, data) {
		tb.Fatal("echo differs from what was sent")
	}
	_ = c.SetReadDeadline(time.Time{})
}

// waitFor polls cond until it holds or 5 s pass.
func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// expectClosed reads until the connection ends and returns the error (nil
// for a clean EOF).
func expectClosed(tb testing.TB, c net.Conn) error {
	tb.Helper()
	if err := c.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		tb.Fatal(err)
	}
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		tb.Fatal("connection still open")
	}
	return err
}

// expectSilence checks that nothing arrives on c for d (a bounded wait for
// an absence, not a synchronisation sleep).
func expectSilence(tb testing.TB, c net.Conn, d time.Duration) {
	tb.Helper()
	if err := c.SetReadDeadline(time.Now().Add(d)); err != nil {
		tb.Fatal(err)
	}
	buf := make([]byte, 1)
	n, err := c.Read(buf)
	var ne net.Error
	if n != 0 || !errors.As(err, &ne) || !ne.Timeout() {
		tb.Fatalf("expected nothing, read %d bytes, err %v", n, err)
	}
	_ = c.SetReadDeadline(time.Time{})
}

func TestPass(t *testing.T) {
	srv := newEchoServer(t)
	p := newProxy(t, srv.ln.Addr().String())
	if p.Fault().Mode != Pass {
		t.Fatalf("initial fault %v", p.Fault().Mode)
	}
	c := dial(t, p.Addr())
	data := randomBytes(t, 1<<20)
	roundTrip(t, c, data)

	// Half-close travels through: the server sees EOF and closes, we see EOF.
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if err := expectClosed(t, c); err != nil {
		t.Fatalf("after half-close: %v", err)
	}
	end := <-srv.ended
	if end.n != 1<<20 || !errors.Is(end.err, io.EOF) {
		t.Fatalf("server: %d bytes, %v", end.n, end.err)
	}
	waitFor(t, "connection closed", func() bool { return !p.Conns()[0].Open })
	st := p.Conns()[0]
	if st.ID != 1 || st.Up != 1<<20 || st.Down != 1<<20 || st.Dropped || st.Reset || st.Client != c.LocalAddr().String() {
		t.Fatalf("stats %+v", st)
	}
}

func TestDrop(t *testing.T) {
	srv := newEchoServer(t)
	p := newProxy(t, srv.ln.Addr().String())
	open := dial(t, p.Addr())
	roundTrip(t, open, []byte("before"))

	p.SetFault(Fault{Mode: Drop})
	if err := expectClosed(t, open); err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("open connection after Drop: %v", err)
	}
	fresh := dial(t, p.Addr())
	if err := expectClosed(t, fresh); err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("new connection under Drop: %v", err)
	}
	waitFor(t, "two dropped connections", func() bool {
		cs := p.Conns()
		return len(cs) == 2 && cs[0].Dropped && cs[1].Dropped && !cs[0].Open && !cs[1].Open
	})
	if n := srv.accepted.Load(); n != 1 {
		t.Fatalf("target saw %d connections, want 1 (dropped ones never reach it)", n)
	}

	p.SetFault(Fault{Mode: Pass})
	roundTrip(t, dial(t, p.Addr()), []byte("after"))
}

func TestStall(t *testing.T) {
	srv := newEchoServer(t)
	p := newProxy(t, srv.ln.Addr().String())
	c := dial(t, p.Addr())
	roundTrip(t, c, []byte("warm"))

	p.SetFault(Fault{Mode: Stall})
	if _, err := c.Write([]byte("held")); err != nil {
		t.Fatal(err)
	}
	expectSilence(t, c, 200*time.Millisecond)
	if up := p.Conns()[0].Up; up != 4 {
		t.Fatalf("forwarded %d bytes upstream during the stall, want the 4 from before", up)
	}
	p.SetFault(Fault{Mode: Pass})
	got := make([]byte, 4)
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "held" {
		t.Fatalf("after the stall: %q, %v", got, err)
	}

	// A bounded stall ends by itself.
	start := time.Now()
	p.SetFault(Fault{Mode: Stall, For: 150 * time.Millisecond})
	roundTrip(t, c, []byte("later"))
	if el := time.Since(start); el < 150*time.Millisecond {
		t.Fatalf("bounded stall lasted %v", el)
	}
	if m := p.Fault().Mode; m != Pass {
		t.Fatalf("fault after the stall expired = %v", m)
	}

	// One direction only: the target receives, nothing comes back.
	p.SetFault(Fault{Mode: Stall, Dir: Downstream})
	if _, err := c.Write([]byte("oneway")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "upstream bytes", func() bool { return p.Conns()[0].Up == 4+4+5+6 })
	expectSilence(t, c, 100*time.Millisecond)
	p.SetFault(Fault{})
	got = make([]byte, 6)
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "oneway" {
		t.Fatalf("after the downstream stall: %q, %v", got, err)
	}
}

func TestReset(t *testing.T) {
	srv := newEchoServer(t)
	p := newProxy(t, srv.ln.Addr().String())
	c := dial(t, p.Addr())
	roundTrip(t, c, []byte("x"))

	// 1000 more bytes upstream, counted from now, then RST both ways.
	p.SetFault(Fault{Mode: Reset, Dir: Upstream, After: 1000})
	if _, err := c.Write(randomBytes(t, 5000)); err != nil {
		t.Fatal(err)
	}
	if err := expectClosed(t, c); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("client read after Reset: %v, want ECONNRESET", err)
	}
	end := <-srv.ended
	if end.n != 1+1000 {
		t.Fatalf("target received %d bytes, want 1001", end.n)
	}
	if !errors.Is(end.err, syscall.ECONNRESET) {
		t.Fatalf("target saw %v, want ECONNRESET", end.err)
	}
	st := p.Conns()[0]
	if !st.Reset || st.Open || st.Up != 1001 {
		t.Fatalf("stats %+v", st)
	}

	// New connections are reset at their first byte with After 0.
	p.SetFault(Fault{Mode: Reset})
	c2 := dial(t, p.Addr())
	if _, err := c2.Write([]byte("boom")); err != nil {
		t.Fatal(err)
	}
	if err := expectClosed(t, c2); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("second client: %v, want ECONNRESET", err)
	}
	if end := <-srv.ended; end.n != 0 {
		t.Fatalf("target received %d bytes under After 0", end.n)
	}
}

func TestSlow(t *testing.T) {
	srv := newEchoServer(t)
	p := newProxy(t, srv.ln.Addr().String())
	c := dial(t, p.Addr())
	const rate = 20_000
	p.SetFault(Fault{Mode: Slow, BytesPerSec: rate})
	data := randomBytes(t, 10_000) // 0.5 s each way at the rate, pipelined
	start := time.Now()
	roundTrip(t, c, data)
	if el := time.Since(start); el < 450*time.Millisecond {
		t.Fatalf("10000 bytes at %d B/s took %v, want >= 0.45 s", rate, el)
	}
	p.SetFault(Fault{Mode: Pass})
	start = time.Now()
	roundTrip(t, c, randomBytes(t, 1<<20))
	t.Logf("1 MiB after Slow was lifted: %v", time.Since(start))
}

func TestTargetDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	p := newProxy(t, addr)
	c := dial(t, p.Addr())
	if err := expectClosed(t, c); err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("client of a proxy whose target is down: %v", err)
	}
	waitFor(t, "connection closed", func() bool { cs := p.Conns(); return len(cs) == 1 && !cs[0].Open })
}

// TestCloseWaits closes a proxy with a stalled connection: Close must end
// the connection and return once its goroutines are gone.
func TestCloseWaits(t *testing.T) {
	srv := newEchoServer(t)
	p, err := New(srv.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c := dial(t, p.Addr())
	roundTrip(t, c, []byte("x"))
	p.SetFault(Fault{Mode: Stall})
	if _, err := c.Write([]byte("stuck")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "data held", func() bool { return p.Conns()[0].Up == 1 })
	done := make(chan error, 1)
	go func() { done <- p.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return")
	}
	if err := expectClosed(t, c); err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("client after Close: %v", err)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := net.Dial("tcp", p.Addr()); err == nil {
		t.Fatal("proxy still accepts after Close")
	}
}

// TestSwitchUnderLoad switches faults while several clients stream: after
// the last switch to Pass every byte arrives intact and in order.
func TestSwitchUnderLoad(t *testing.T) {
	srv := newEchoServer(t)
	p := newProxy(t, srv.ln.Addr().String())
	const clients, size = 4, 1 << 20
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for range clients {
		c := dial(t, p.Addr())
		data := randomBytes(t, size)
		wg.Go(func() {
			go func() {
				for off := 0; off < size; off += 4096 {
					if _, err := c.Write(data[off : off+4096]); err != nil {
						return
					}
				}
			}()
			got := make([]byte, size)
			if err := c.SetReadDeadline(time.Now().Add(20 * time.Second)); err != nil {
				errs <- err
				return
			}
			if _, err := io.ReadFull(c, got); err != nil {
				errs <- err
				return
			}
			if !bytes.Equal(got, data) {
				errs <- errors.New("stream corrupted")
			}
		})
	}
	total := func() (n int64) {
		for _, cs := range p.Conns() {
			n += cs.Up + cs.Down
		}
		return n
	}
	for _, f := range []Fault{
		{Mode: Slow, BytesPerSec: 1 << 20},
		{Mode: Stall, For: 50 * time.Millisecond},
		{Mode: Slow, BytesPerSec: 4 << 20, Dir: Downstream},
		{Mode: Stall, Dir: Upstream, For: 50 * time.Millisecond},
		{Mode: Pass},
	} {
		before := total()
		p.SetFault(f)
		if f.Mode == Stall {
			// Wait for the bounded stall to end by itself.
			waitFor(t, "stall to expire", func() bool { return p.Fault().Mode == Pass })
			continue
		}
		waitFor(t, "progress", func() bool {
			n := total()
			return n >= before+64<<10 || n == 2*clients*size
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// A counter is updated just after its write returns, so the reader can
	// be a moment ahead of it.
	waitFor(t, "counters to reach the bytes sent", func() bool {
		var up, down int64
		for _, cs := range p.Conns() {
			up += cs.Up
			down += cs.Down
		}
		return up == clients*size && down == clients*size
	})

}

func TestSetFaultRefusesNonsense(t *testing.T) {
	p := newProxy(t, "127.0.0.1:1")
	for _, f := range []Fault{{Mode: Slow}, {Mode: Reset, After: -1}} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("SetFault(%+v) did not panic", f)
				}
			}()
			p.SetFault(f)
		}()
	}
	if m := p.Fault().Mode; m != Pass {
		t.Fatalf("fault after refused SetFault = %v", m)
	}
}
