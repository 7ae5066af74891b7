package agent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"io"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/kurer/kurer/agent/localapi"
	"github.com/kurer/kurer/envelope"
	"github.com/kurer/kurer/gateway/api"
	"github.com/kurer/kurer/internal/errs"
	"github.com/kurer/kurer/internal/pki"
	"github.com/kurer/kurer/internal/pki/pkitest"
	"github.com/kurer/kurer/schemas"
)

// senderCatalog is a Gateway that knows one sender account (Trondheim);
// everything else is catalogOnly's (unavailable).
type senderCatalog struct {
	catalogOnly
	sender api.Account
}

func (g senderCatalog) Lookup(_ context.Context, id string) (api.Account, error) {
	if id == g.sender.ID {
		return g.sender, nil
	}
	return api.Account{}, errs.Newf(errs.NotFound, "no such account")
}

// TestOversizeMeldingRefusedBeforeRead: an incoming envelope whose
// melding.json is larger than schemas.MaxMeldingSize is refused like a
// schema failure (schema_invalid, field code too_large, a signed avvist
// owed to the sender), and the agent never holds the whole melding.json in
// memory: it reads at most the limit. (The envelope's limits let a small
// envelope expand a deflated melding.json 200 times, so reading it whole
// first is an allocation the sender chooses.)
func TestOversizeMeldingRefusedBeforeRead(t *testing.T) {
	const meldingSize = 32 << 20 // well above schemas.MaxMeldingSize (1 MiB)
	p := pkitest.New(t, "trondheim", "oslo")
	tr, osl := p.Accounts["trondheim"], p.Accounts["oslo"]
	const trID, oslID = "00000000-0000-4000-8000-000000005001", "00000000-0000-4000-8000-000000000301"
	gw := senderCatalog{sender: api.Account{ID: trID, Name: "trondheim", OrgNumber: "937155215", Municipality: "5001",
		Types: []string{schemas.TypeSakOverforing},
		Certificates: []api.Certificate{{PEM: string(pki.EncodeCertPEM(tr.Cert)), Fingerprint: pki.Fingerprint(tr.Cert),
			NotBefore: tr.Cert.NotBefore, NotAfter: tr.Cert.NotAfter}}}}
	cfg := Config{Account: oslID, DataDir: t.TempDir(), Dev: true, LocalAPI: LocalAPIConfig{Listen: "127.0.0.1:0"}}
	a, err := New(cfg, slog.New(slog.DiscardHandler), WithKeys(Key{Cert: osl.Cert, Signer: osl.Key}),
		WithTrustRoots(p.CA.Cert), WithGateway(gw), WithToken(fuzzToken))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close() })

	// A well-formed melding.json, padded past the limit with one long
	// string (a sender's agent would never send it: its schema check
	// refuses it; this sender seals by hand).
	melding := []byte(`{"syntetisk": true, "pad": "` + strings.Repeat("a", meldingSize) + `"}`)
	now := time.Now().UTC().Truncate(time.Second)
	m := envelope.Manifest{ID: uuid.NewString(), Type: schemas.TypeSakOverforing, From: trID, To: oslID,
		Created: now, Expires: now.Add(24 * time.Hour)}
	files := []envelope.File{{Name: localapi.MetadataFile, MediaType: "application/json", Size: int64(len(melding)),
		Open: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(melding)), nil }}}
	var env bytes.Buffer
	if err := envelope.Seal(t.Context(), &env, &m, files, envelope.SealOptions{
		Signer: tr.Key, SignerCert: tr.Cert, Recipients: []*x509.Certificate{osl.Cert},
	}); err != nil {
		t.Fatalf("seal: %v", err)
	}
	sum := sha256.Sum256(env.Bytes())
	it := api.MailboxItem{Kind: api.KindMessage, Content: env.Bytes(), Routing: api.Routing{ID: m.ID, From: trID, To: oslID,
		Type: m.Type, Expires: m.Expires, Size: int64(env.Len()),
		Digest: "sha-256=:" + base64.StdEncoding.EncodeToString(sum[:]) + ":"}}

	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	err = a.handleMessage(t.Context(), it)
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatalf("handle: %v", err)
	}

	rec, err := a.store.getIn(m.ID)
	if err != nil {
		t.Fatalf("no record of the refused message: %v", err)
	}
	if rec.State != localapi.InRejected || rec.RejectCode != string(errs.SchemaInvalid) || !rec.NeedReject {
		t.Fatalf("state %s, reject code %q, need reject %v; want rejected, %s, true", rec.State, rec.RejectCode, rec.NeedReject, errs.SchemaInvalid)
	}
	if len(rec.Reasons) != 1 || rec.Reasons[0].Code != schemas.CodeTooLarge {
		t.Fatalf("reasons %+v, want one %s", rec.Reasons, schemas.CodeTooLarge)
	}
	if len(rec.PendingReceipts) != 1 || rec.PendingReceipts[0].Kind != KindAvvist ||
		rec.PendingReceipts[0].Reasons[0].Code != schemas.CodeTooLarge {
		t.Fatalf("pending receipts %+v, want an avvist with %s", rec.PendingReceipts, schemas.CodeTooLarge)
	}
	// Nothing opened is kept.
	if _, err := os.Stat(a.inDir(m.ID)); !os.IsNotExist(err) {
		t.Fatalf("the refused message has an inbox folder: %v", err)
	}
	if ents, _ := os.ReadDir(a.store.path(dirSpool)); len(ents) != 0 {
		t.Fatalf("the spool holds %d entries after the refusal", len(ents))
	}

	// Opening streams (bounded buffers); only the melding read could
	// take its size. Allow the limit several times over, far below it.
	if got := after.TotalAlloc - before.TotalAlloc; got > meldingSize/2 {
		t.Fatalf("handling the envelope allocated %d MiB for a %d MiB melding.json: it was read whole (limit %d MiB)",
			got>>20, meldingSize>>20, schemas.MaxMeldingSize>>20)
	} else {
		t.Logf("allocated %.1f MiB", float64(got)/(1<<20))
	}
}
