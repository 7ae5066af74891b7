// Package httprecover keeps a panicking HTTP handler from taking its
// request down unseen. net/http alone would cut the connection and write
// the panic to the server's ErrorLog; here the client gets the errs
// catalogue's 500 internal_error as JSON (when the answer has not begun),
// and the panic is logged at Error level as "handler panic" with the
// route, the method and the stack, never the request's headers or body.
// The gateway and the agent's local API share it.
package httprecover

import (
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"

	"github.com/kurer/kurer/internal/errs"
)

// maxValueLog caps the panic value in the log line (it is the program's
// text, but a value can be large).
const maxValueLog = 1 << 10

// Options say what a panic's log record holds.
type Options struct {
	// LogValue logs the panic's value (shortened to 1 KiB). Without it only
	// the value's type is logged: where plaintext lives (the agent), a
	// value could quote a payload.
	LogValue bool
}

// Handler wraps h. If the response has not begun, the client gets the
// catalogue's 500 internal_error (headers h had set, such as
// Content-Length or Content-Digest, are dropped); if it has, the handler is
// aborted with http.ErrAbortHandler, so the connection is cut and a
// truncated answer never looks complete. A handler's own
// http.ErrAbortHandler passes through untouched.
func Handler(log *slog.Logger, h http.Handler, o Options) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		pw := &writer{ResponseWriter: w}
		defer func() {
			v := recover()
			if v == nil {
				return
			}
			if v == http.ErrAbortHandler { // this exact value, as net/http checks it
				panic(v)
			}
			Log(log, r, v, pw.started, o)
			if pw.started {
				panic(http.ErrAbortHandler)
			}
			clear(w.Header())
			errs.Write(w, errs.New(errs.Internal, nil))
		}()
		h.ServeHTTP(pw, r)
	})
}

// Log logs v, a panic recovered while handling r, as Handler does; for
// work a handler runs on goroutines of its own, out of Handler's reach.
// started says whether the response had begun.
func Log(log *slog.Logger, r *http.Request, v any, started bool, o Options) {
	attrs := []any{"route", r.Pattern, "method", r.Method, "response_started", started}
	if o.LogValue {
		msg := fmt.Sprint(v)
		if len(msg) > maxValueLog {
			msg = msg[:maxValueLog] + "..."
		}
		attrs = append(attrs, "panic", msg)
	} else {
		attrs = append(attrs, "panic_type", fmt.Sprintf("%T", v))
	}
	log.Error("handler panic", append(attrs, "stack", string(debug.Stack()))...)
}

// writer notes whether the response has begun (its status line and
// headers are out).
type writer struct {
	http.ResponseWriter
	started bool
}

func (p *writer) WriteHeader(code int) {
	if code >= 200 || code == http.StatusSwitchingProtocols {
		p.started = true
	}
	p.ResponseWriter.WriteHeader(code)
}

func (p *writer) Write(b []byte) (int, error) {
	p.started = true
	return p.ResponseWriter.Write(b)
}

// FlushError sends the headers if they are not out yet
// (http.ResponseController.Flush), so the response has begun.
func (p *writer) FlushError() error {
	p.started = true
	return http.NewResponseController(p.ResponseWriter).Flush()
}

func (p *writer) Unwrap() http.ResponseWriter { return p.ResponseWriter }
