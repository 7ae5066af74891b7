// Package faultproxy is a TCP proxy that injects network faults between two
// real processes, for kurer's reliability suite (issue 7): it listens on
// 127.0.0.1:0, forwards every connection to one target, and can be switched
// at run time to drop, stall, reset or slow the traffic. Faults apply to
// connections already open as well as new ones, so a test can break an
// upload in the middle.
//
// It is test tooling: no logging, no limits beyond the OS's, and a counter
// record per connection kept for the proxy's lifetime.
package faultproxy

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Mode is the kind of fault.
type Mode int

// The faults.
const (
	// Pass forwards everything unchanged.
	Pass Mode = iota
	// Drop closes every open connection (FIN) and accepts new connections
	// only to close them immediately, before connecting to the target.
	Drop
	// Stall reads what arrives but forwards nothing until the fault is
	// changed or Fault.For has passed (then it forwards what it held, as
	// Pass). Connections stay open.
	Stall
	// Reset forwards Fault.After more bytes on each connection, counted from
	// when the connection first sees this fault, then closes both sides
	// with a TCP RST (SO_LINGER 0). New connections are reset after After
	// bytes too; with After 0, at their first byte.
	Reset
	// Slow forwards at most Fault.BytesPerSec bytes per second per
	// connection and direction.
	Slow
)

func (m Mode) String() string {
	switch m {
	case Pass:
		return "pass"
	case Drop:
		return "drop"
	case Stall:
		return "stall"
	case Reset:
		return "reset"
	case Slow:
		return "slow"
	}
	return fmt.Sprintf("mode(%d)", int(m))
}

// Direction limits a fault to one direction of traffic.
type Direction int

// Directions. Upstream is client to target, Downstream target to client.
const (
	Both Direction = iota
	Upstream
	Downstream
)

// Fault is what the proxy does to traffic. The zero value is Pass.
type Fault struct {
	Mode Mode
	// Dir limits Stall, Reset and Slow to one direction (Reset then counts
	// only that direction's bytes). Drop always affects whole connections.
	Dir Direction
	// After is the number of bytes Reset lets through first.
	After int64
	// For bounds a Stall: after it has passed since SetFault the proxy
	// passes traffic again. Zero: until the next SetFault.
	For time.Duration
	// BytesPerSec is Slow's rate; it must be positive.
	BytesPerSec int64
}

// ConnStats are the counters of one proxied connection.
type ConnStats struct {
	// ID numbers connections 1, 2, 3, ... in accept order.
	ID uint64
	// Client is the client's address.
	Client string
	// Up is the number of bytes forwarded client to target, Down target to
	// client.
	Up, Down int64
	// Open is false once the proxy has started closing both sides.
	Open bool
	// Dropped is true when the proxy closed the connection because of Drop,
	// Reset when because of Reset.
	Dropped, Reset bool
}

// state is the current fault with its generation; a new generation starts
// with every SetFault.
type state struct {
	fault      Fault
	gen        uint64
	stallUntil time.Time
	changed    chan struct{} // closed at the next SetFault
}

// Proxy is a running fault proxy. Its methods are safe for concurrent use.
type Proxy struct {
	target string
	ln     net.Listener
	dialer net.Dialer

	mu     sync.Mutex
	st     state
	conns  []*conn
	closed bool

	closing chan struct{}
	wg      sync.WaitGroup
	once    sync.Once
}

// New starts a proxy on 127.0.0.1 (a free port) forwarding to target
// ("host:port"). It forwards (Pass) until SetFault.
func New(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("faultproxy: listen: %w", err)
	}
	p := &Proxy{
		target:  target,
		ln:      ln,
		dialer:  net.Dialer{Timeout: 5 * time.Second},
		st:      state{changed: make(chan struct{})},
		closing: make(chan struct{}),
	}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is the proxy's listening address, "127.0.0.1:PORT".
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Target is the address the proxy forwards to.
func (p *Proxy) Target() string { return p.target }

// SetFault switches the fault for open and new connections. It panics on a
// Slow fault without a positive rate or a negative After, which are bugs
// in the test.
func (p *Proxy) SetFault(f Fault) {
	if f.Mode == Slow && f.BytesPerSec <= 0 {
		panic("faultproxy: Slow needs BytesPerSec > 0")
	}
	if f.After < 0 {
		panic("faultproxy: negative After")
	}
	p.mu.Lock()
	close(p.st.changed)
	p.st = state{fault: f, gen: p.st.gen + 1, changed: make(chan struct{})}
	if f.Mode == Stall && f.For > 0 {
		p.st.stallUntil = time.Now().Add(f.For)
	}
	var drop []*conn
	if f.Mode == Drop {
		drop = append(drop, p.conns...)
	}
	p.mu.Unlock()
	for _, c := range drop {
		c.shutdown(closeDrop)
	}
}

// Fault returns the fault in force.
func (p *Proxy) Fault() Fault {
	st := p.state()
	return st.fault
}

// state returns the current state, turning an expired Stall into Pass.
func (p *Proxy) state() state {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.st.fault.Mode == Stall && !p.st.stallUntil.IsZero() && !time.Now().Before(p.st.stallUntil) {
		close(p.st.changed)
		p.st = state{fault: Fault{Mode: Pass}, gen: p.st.gen + 1, changed: make(chan struct{})}
	}
	return p.st
}

// Conns returns the counters of every connection accepted so far, in
// accept order.
func (p *Proxy) Conns() []ConnStats {
	p.mu.Lock()
	conns := append([]*conn(nil), p.conns...)
	p.mu.Unlock()
	out := make([]ConnStats, len(conns))
	for i, c := range conns {
		out[i] = c.stats()
	}
	return out
}

// Close stops accepting, closes every connection and waits for all the
// proxy's goroutines. It is idempotent.
func (p *Proxy) Close() error {
	var err error
	p.once.Do(func() {
		close(p.closing)
		err = p.ln.Close()
		p.mu.Lock()
		p.closed = true
		conns := append([]*conn(nil), p.conns...)
		p.mu.Unlock()
		for _, c := range conns {
			c.shutdown(closeNormal)
		}
		p.wg.Wait()
	})
	return err
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	var id uint64
	for {
		nc, err := p.ln.Accept()
		if err != nil {
			select {
			case <-p.closing:
				return
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return
		}
		id++
		c := &conn{id: id, p: p, client: nc.(*net.TCPConn), addr: nc.RemoteAddr().String(), done: make(chan struct{})}
		c.open.Store(true)
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			nc.Close()
			return
		}
		p.conns = append(p.conns, c)
		drop := p.st.fault.Mode == Drop
		if !drop {
			p.wg.Add(1)
		}
		p.mu.Unlock()
		if drop {
			c.shutdown(closeDrop)
			continue
		}
		go c.run()
	}
}

// How a connection is closed.
const (
	closeNormal = iota
	closeDrop
	closeReset
)

// conn is one proxied connection.
type conn struct {
	id     uint64
	p      *Proxy
	addr   string
	client *net.TCPConn

	mu      sync.Mutex // guards target, gen, used and the flags
	target  *net.TCPConn
	gen     uint64
	used    int64 // bytes let through under the Reset of generation gen
	dropped bool
	reset   bool

	up, down atomic.Int64
	open     atomic.Bool
	done     chan struct{}
	once     sync.Once
}

func (c *conn) stats() ConnStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return ConnStats{ID: c.id, Client: c.addr, Up: c.up.Load(), Down: c.down.Load(),
		Open: c.open.Load(), Dropped: c.dropped, Reset: c.reset}
}

// shutdown closes both sides once; with closeReset it sends RST.
func (c *conn) shutdown(how int) {
	c.once.Do(func() {
		c.mu.Lock()
		c.dropped = how == closeDrop
		c.reset = how == closeReset
		c.open.Store(false)
		t := c.target
		c.mu.Unlock()
		for _, tc := range []*net.TCPConn{c.client, t} {
			if tc == nil {
				continue
			}
			if how == closeReset {
				_ = tc.SetLinger(0)
			}
			_ = tc.Close()
		}
		close(c.done)
	})
}

func (c *conn) run() {
	defer c.p.wg.Done()
	nc, err := c.p.dialer.Dial("tcp", c.p.target)
	if err != nil {
		c.shutdown(closeNormal)
		return
	}
	c.mu.Lock()
	c.target = nc.(*net.TCPConn)
	c.mu.Unlock()
	select {
	case <-c.done: // dropped or closed while dialing
		_ = nc.Close()
		return
	default:
	}
	var wg sync.WaitGroup
	wg.Add(2)
	var halfClosed atomic.Int32
	pumpDone := func() {
		if halfClosed.Add(1) == 2 {
			c.shutdown(closeNormal)
		}
	}
	go func() {
		defer wg.Done()
		if c.pump(c.target, c.client, Upstream, &c.up) {
			pumpDone()
		}
	}()
	go func() {
		defer wg.Done()
		if c.pump(c.client, c.target, Downstream, &c.down) {
			pumpDone()
		}
	}()
	wg.Wait()
}

// pump copies src to dst applying the fault in force. It returns true
// after a clean EOF (dst half-closed), false when the connection was
// closed.
func (c *conn) pump(dst, src *net.TCPConn, dir Direction, count *atomic.Int64) bool {
	buf := make([]byte, 32<<10)
	for {
		n, rerr := src.Read(buf)
		if !c.forward(dst, buf[:n], dir, count) {
			return false
		}
		if rerr != nil {
			if errors.Is(rerr, io.EOF) {
				_ = dst.CloseWrite()
				return true
			}
			c.shutdown(closeNormal)
			return false
		}
	}
}

// forward writes data to dst under the current fault; false means the
// connection is gone.
func (c *conn) forward(dst *net.TCPConn, data []byte, dir Direction, count *atomic.Int64) bool {
	var slowStart time.Time
	var slowSent int64
	var slowGen uint64
	for len(data) > 0 {
		st := c.p.state()
		f := st.fault
		if f.Dir != Both && f.Dir != dir && f.Mode != Drop {
			f.Mode = Pass
		}
		switch f.Mode {
		case Drop:
			c.shutdown(closeDrop)
			return false
		case Stall:
			var (
				deadline <-chan time.Time
				t        *time.Timer
			)
			if !st.stallUntil.IsZero() {
				t = time.NewTimer(time.Until(st.stallUntil))
				deadline = t.C
			}
			alive := true
			select {
			case <-st.changed:
			case <-deadline:
			case <-c.done:
				alive = false
			}
			if t != nil {
				t.Stop()
			}
			if !alive {
				return false
			}
		case Reset:
			allowed := c.reserve(st.gen, f.After, int64(len(data)))
			if allowed > 0 {
				if !c.write(dst, data[:allowed], count) {
					return false
				}
				data = data[allowed:]
			}
			if c.exhausted(st.gen, f.After) {
				c.shutdown(closeReset)
				return false
			}
		case Slow:
			if slowGen != st.gen || slowStart.IsZero() {
				slowStart, slowSent, slowGen = time.Now(), 0, st.gen
			}
			piece := max(f.BytesPerSec/20, 1) // about 50 ms worth
			piece = min(piece, int64(len(data)))
			if !c.write(dst, data[:piece], count) {
				return false
			}
			data = data[piece:]
			slowSent += piece
			due := slowStart.Add(time.Duration(float64(slowSent) / float64(f.BytesPerSec) * float64(time.Second)))
			if wait := time.Until(due); wait > 0 {
				t := time.NewTimer(wait)
				select {
				case <-t.C:
				case <-st.changed:
				case <-c.done:
					t.Stop()
					return false
				}
				t.Stop()
			}
		default:
			if !c.write(dst, data, count) {
				return false
			}
			data = nil
		}
	}
	return true
}

func (c *conn) write(dst *net.TCPConn, data []byte, count *atomic.Int64) bool {
	n, err := dst.Write(data)
	count.Add(int64(n))
	if err != nil {
		c.shutdown(closeNormal)
		return false
	}
	return true
}

// reserve takes up to want bytes of the Reset budget of generation gen.
func (c *conn) reserve(gen uint64, after, want int64) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen != gen {
		c.gen, c.used = gen, 0
	}
	allowed := min(want, after-c.used)
	if allowed < 0 {
		allowed = 0
	}
	c.used += allowed
	return allowed
}

// exhausted reports whether the Reset budget of generation gen is used up.
func (c *conn) exhausted(gen uint64, after int64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gen == gen && c.used >= after
}
