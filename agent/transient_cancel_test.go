package agent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/kurer/kurer/envelope"
	"github.com/kurer/kurer/gateway/api"
	"github.com/kurer/kurer/internal/errs"
	"github.com/kurer/kurer/internal/pki"
	"github.com/kurer/kurer/internal/pki/pkitest"
	"github.com/kurer/kurer/schemas"
)

const (
	transientSender   = "00000000-0000-4000-8000-000000005001"
	transientReceiver = "00000000-0000-4000-8000-000000000301"
)

// senderOnly is a Gateway that knows the sending account and records the
// rejections it is asked for; everything else is unavailable.
type senderOnly struct {
	sender api.Account

	mu       sync.Mutex
	rejected []string
}

var errTransientOffline = errs.Newf(errs.Unavailable, "test: no gateway")

func (g *senderOnly) Submit(context.Context, api.Routing, *os.File) (api.SubmitResponse, error) {
	return api.SubmitResponse{}, errTransientOffline
}
func (g *senderOnly) Poll(context.Context, time.Duration, int) ([]api.MailboxItem, error) {
	return nil, errTransientOffline
}
func (g *senderOnly) Download(context.Context, string, *os.File) error { return errTransientOffline }
func (g *senderOnly) Ack(context.Context, string) error                { return errTransientOffline }
func (g *senderOnly) AckMany(context.Context, []string) (map[string]error, error) {
	return nil, errTransientOffline
}
func (g *senderOnly) Reject(_ context.Context, id string, _ api.RejectRequest) error {
	g.mu.Lock()
	g.rejected = append(g.rejected, id)
	g.mu.Unlock()
	return nil
}
func (g *senderOnly) VerifyNotice(string) (api.NoticeClaims, error) {
	return api.NoticeClaims{}, errTransientOffline
}
func (g *senderOnly) Lookup(_ context.Context, id string) (api.Account, error) {
	if id == g.sender.ID {
		return g.sender, nil
	}
	return api.Account{}, errs.Newf(errs.NotFound, "no such account")
}
func (g *senderOnly) Find(context.Context, string, string) (api.Account, error) {
	return api.Account{}, errs.Newf(errs.NotFound, "no such account")
}

// receivingAgent is Oslo's agent, built with New but not run, over a
// gateway stub that knows Trondheim; hook is its step hook. It returns a
// sealer of valid cases from Trondheim to Oslo (envelope bytes and their
// mailbox item, content inline as a small poll answer brings it).
func receivingAgent(t *testing.T, hook func(Step, string) error) (*Agent, *senderOnly, func() api.MailboxItem) {
	t.Helper()
	p := pkitest.New(t, "trondheim", "oslo")
	tr, osl := p.Accounts["trondheim"], p.Accounts["oslo"]
	gw := &senderOnly{sender: api.Account{ID: transientSender, Name: "trondheim", OrgNumber: "974760223", Municipality: "5001",
		Types: []string{schemas.TypeSakOverforing, schemas.TypeMottatt, schemas.TypeAvvist, schemas.TypeBehandlet},
		Certificates: []api.Certificate{{PEM: string(pki.EncodeCertPEM(tr.Cert)), Fingerprint: pki.Fingerprint(tr.Cert),
			NotBefore: tr.Cert.NotBefore, NotAfter: tr.Cert.NotAfter}}}}
	cfg := Config{Account: transientReceiver, DataDir: t.TempDir(), Dev: true, LocalAPI: LocalAPIConfig{Listen: "127.0.0.1:0"}}
	a, err := New(cfg, slog.New(slog.DiscardHandler), WithKeys(Key{Cert: osl.Cert, Signer: osl.Key}),
		WithTrustRoots(p.CA.Cert), WithGateway(gw), WithToken("transient-token-0123456789abcdef"), WithStepHook(hook))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close() })
	seal := func() api.MailboxItem {
		t.Helper()
		c := exampleCaseOf(t)
		m := &envelope.Manifest{ID: uuid.NewString(), Type: schemas.TypeSakOverforing, From: transientSender, To: transientReceiver,
			Expires: time.Now().Add(time.Hour).UTC().Truncate(time.Second)}
		files := []envelope.File{{Name: "melding.json", MediaType: "application/json", Size: int64(len(c.Metadata)),
			Open: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(c.Metadata)), nil }}}
		for _, f := range c.Files {
			st, err := os.Stat(f.Path)
			if err != nil {
				t.Fatal(err)
			}
			files = append(files, envelope.File{Name: f.Name, MediaType: "text/plain", Size: st.Size(),
				Open: func() (io.ReadCloser, error) { return os.Open(f.Path) }})
		}
		var out bytes.Buffer
		if err := envelope.Seal(t.Context(), &out, m, files, envelope.SealOptions{
			Signer: tr.Key, SignerCert: tr.Cert, Recipients: []*x509.Certificate{osl.Cert},
		}); err != nil {
			t.Fatalf("seal: %v", err)
		}
		b := out.Bytes()
		sum := sha256.Sum256(b)
		return api.MailboxItem{Kind: api.KindMessage, Content: b, Routing: api.Routing{ID: m.ID, From: transientSender,
			To: transientReceiver, Type: m.Type, Expires: m.Expires, Size: int64(len(b)),
			Digest: "sha-256=:" + base64.StdEncoding.EncodeToString(sum[:]) + ":"}}
	}
	return a, gw, seal
}

// TestOpenWithEndedContextDoesNotRefuse: an agent stopping (its context
// ends, as on SIGTERM) while it opens a valid case must not refuse it: no
// rejection recorded, none asked of the gateway, no avvist receipt queued,
// nothing left in the spool; handleMessage returns the error so that the
// item stays unacked and is offered again. The context ends at
// StepDownloaded, after the spooling and before the opening. Several cases
// are tried: a rejection committed during shutdown depended on a race
// (the store's Update takes a request or an ended context, whichever
// select picks), so one try could pass by luck.
func TestOpenWithEndedContextDoesNotRefuse(t *testing.T) {
	var cancel context.CancelFunc
	a, gw, seal := receivingAgent(t, func(s Step, _ string) error {
		if s == StepDownloaded {
			cancel()
		}
		return nil
	})
	for i := range 10 {
		it := seal()
		var ctx context.Context
		ctx, cancel = context.WithCancel(t.Context())
		err := a.handleMessage(ctx, it)
		cancel()
		if err == nil {
			t.Fatalf("try %d: handleMessage = nil with an ended context; want an error (not taken, offered again)", i)
		}
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("try %d: handleMessage = %v; want it to wrap context.Canceled", i, err)
		}
		if rec, err := a.store.getIn(it.Routing.ID); !errors.Is(err, errNotFound) {
			t.Fatalf("try %d: incoming record %+v (%v) after an ended context; want none", i, rec, err)
		}
		assertNothingRefused(t, a, gw)
	}

	// The same case, opened with a live context, is stored.
	cancel = func() {}
	it := seal()
	if err := a.handleMessage(t.Context(), it); err != nil {
		t.Fatalf("handleMessage: %v", err)
	}
	if rec, err := a.store.getIn(it.Routing.ID); err != nil || rec.NeedReject {
		t.Fatalf("incoming record %+v (%v); want stored", rec, err)
	}
}

// TestOpenReadErrorIsLocal: a read error on the downloaded ciphertext (here
// a spool "file" that is a directory, whose reads fail) is this host's
// failure, not the envelope's.
func TestOpenReadErrorIsLocal(t *testing.T) {
	a, _, seal := receivingAgent(t, nil)
	it := seal()
	dir, err := os.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer dir.Close()
	tr, _, err := a.catalog.account(t.Context(), transientSender, false)
	if err != nil {
		t.Fatal(err)
	}
	_, oerr := a.open(t.Context(), dir, filepath.Join(a.store.path(dirSpool), "probe"), it.Routing, a.catalog.certs(tr))
	if oerr == nil {
		t.Fatal("open of an unreadable spool file succeeded")
	}
	if envelopeAtFault(t.Context(), oerr) {
		t.Fatalf("read error %v (reason %q) counted as the envelope's fault", oerr, envelope.ReasonOf(oerr))
	}
}

// TestEnvelopeAtFault: only the envelope package's verdicts on the bytes
// are the envelope's fault; this host's errors and an ended context are
// not, whatever they are wrapped in. The public texts of local failures
// carry no path (a path can hold a payload file name).
func TestEnvelopeAtFault(t *testing.T) {
	verdict := func(r envelope.Reason) error {
		return fmt.Errorf("open envelope: %w", &envelope.Error{Reason: r, Err: errors.New("x")})
	}
	pathErr := &fs.PathError{Op: "write", Path: "/data/spool/.kurer-open-1/dokumenter/Ola Nordmann.pdf", Err: syscall.ENOSPC}
	ended, stop := context.WithCancel(t.Context())
	stop()
	cases := []struct {
		name  string
		ctx   context.Context
		err   error
		fault bool
	}{
		{"decrypt", t.Context(), verdict(envelope.ReasonDecrypt), true},
		{"tag", t.Context(), verdict(envelope.ReasonTag), true},
		{"signature", t.Context(), verdict(envelope.ReasonSignature), true},
		{"chain", t.Context(), verdict(envelope.ReasonChain), true},
		{"signer", t.Context(), verdict(envelope.ReasonSigner), true},
		{"digest", t.Context(), verdict(envelope.ReasonDigest), true},
		{"binding", t.Context(), verdict(envelope.ReasonBinding), true},
		{"limits", t.Context(), verdict(envelope.ReasonLimits), true},
		{"format", t.Context(), verdict(envelope.ReasonFormat), true},
		{"names", t.Context(), verdict(envelope.ReasonNames), true},
		{"io", t.Context(), verdict(envelope.ReasonIO), false},
		{"usage", t.Context(), verdict(envelope.ReasonUsage), false},
		{"io-disk-full", t.Context(), &envelope.Error{Reason: envelope.ReasonIO, Err: pathErr}, false},
		{"io-canceled", t.Context(), &envelope.Error{Reason: envelope.ReasonIO, Err: context.Canceled}, false},
		{"digest-wrapping-an-os-error", t.Context(), &envelope.Error{Reason: envelope.ReasonDigest, Err: fmt.Errorf("read: %w", pathErr)}, false},
		{"format-wrapping-eio", t.Context(), &envelope.Error{Reason: envelope.ReasonFormat, Err: syscall.EIO}, false},
		{"not-an-envelope-error", t.Context(), fmt.Errorf("seek: %w", os.ErrClosed), false},
		{"tag-with-ended-context", ended, verdict(envelope.ReasonTag), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := envelopeAtFault(tc.ctx, tc.err); got != tc.fault {
				t.Fatalf("envelopeAtFault(%v) = %v, want %v", tc.err, got, tc.fault)
			}
		})
	}
	// The texts the receive loop logs: the system's error, no path or name.
	texts := []struct {
		err  error
		want string
	}{
		{&envelope.Error{Reason: envelope.ReasonIO, Err: pathErr}, syscall.ENOSPC.Error()},
		{&envelope.Error{Reason: envelope.ReasonIO, Err: fmt.Errorf("output: %v", pathErr)}, syscall.ENOSPC.Error()},
		{&envelope.Error{Reason: envelope.ReasonNames, Err: errors.New(`zip: file name "Ola: Nordmann" is not NFC`)}, "(names)"},
	}
	for _, tc := range texts {
		msg := (&openLocalError{err: tc.err}).Error()
		if strings.Contains(msg, "Nordmann") || !strings.Contains(msg, tc.want) {
			t.Errorf("local failure text %q: want %q in it and no path or file name", msg, tc.want)
		}
	}
}

// assertNothingRefused checks that a has recorded no refusal, asked the
// gateway for none, queued no receipt, and left nothing in its spool.
func assertNothingRefused(t *testing.T, a *Agent, gw *senderOnly) {
	t.Helper()
	gw.mu.Lock()
	rejected := gw.rejected
	gw.mu.Unlock()
	if len(rejected) != 0 {
		t.Fatalf("gateway asked to reject %v", rejected)
	}
	out, err := a.store.listOut("", maxListLimit, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 0 {
		t.Fatalf("%d outgoing messages (an avvist receipt?) queued", len(out))
	}
	if ids, err := a.store.work(workReject); err != nil || len(ids) != 0 {
		t.Fatalf("reject work %v (%v); want none", ids, err)
	}
	ents, err := os.ReadDir(a.store.path(dirSpool))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		t.Errorf("left in the spool: %s", e.Name())
	}
	if t.Failed() {
		t.FailNow()
	}
}
