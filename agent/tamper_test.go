package agent_test

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/kurer/kurer/agent"
	"github.com/kurer/kurer/agent/agenttest"
	"github.com/kurer/kurer/agent/localapi"
	"github.com/kurer/kurer/envelope"
	"github.com/kurer/kurer/gateway/api"
	"github.com/kurer/kurer/gateway/client"
	"github.com/kurer/kurer/internal/errs"
	"github.com/kurer/kurer/internal/pki/pkitest"
	"github.com/kurer/kurer/schemas"
)

// TestTamperedAndForgedGetSignedRejection puts hand-made envelopes into the
// real gateway as Trondheim's account, past Trondheim's agent: a tampered
// ciphertext, envelopes signed with another key than Trondheim's registered
// certificate, and a manifest that names another receiver or sender than
// the routing header. For each, Oslo's agent must deliver nothing to its
// case system, reject the message at the gateway (a terminal state, not
// left for redelivery), and send Trondheim a signed avvist receipt with the
// precise reason code. Trondheim's agent is stopped, so the test reads
// Trondheim's mailbox itself and opens and verifies the receipt envelope.
// A control case, built the same way but untouched, must be delivered.
func TestTamperedAndForgedGetSignedRejection(t *testing.T) {
	rec := &recordingAdapter{}
	n := receivingNetwork(t, rec, "bergen")
	tr, osl, brg := n.Nodes["trondheim"], n.Nodes["oslo"], n.Nodes["bergen"]
	if err := n.Stop("trondheim"); err != nil {
		t.Fatalf("stop trondheim: %v", err)
	}
	gw := n.Client("trondheim")
	box := &mailbox{c: gw, notices: map[string][]api.NoticeClaims{}, receipts: map[string][]string{}}
	mallory := n.PKI.Add(t, "mallory", nil, time.Time{}, time.Time{}) // chains to the trust root, in no account
	foreign := pkitest.New(t, "trondheim").Accounts["trondheim"]      // Trondheim's name, another CA

	cases := []struct {
		name   string
		signer *pkitest.Account
		mod    func(m *envelope.Manifest)
		tamper func(b []byte) []byte
		reason string // avvist reason code; "" for the control, which is delivered
		local  envelope.Reason
	}{
		{name: "control", signer: tr.Account},
		{name: "tampered-ciphertext", signer: tr.Account, tamper: flipMiddle, reason: agent.ReasonInvalidEnvelope, local: envelope.ReasonTag},
		{name: "forged-sender-other-account-key", signer: brg.Account, reason: agent.ReasonBadSignature, local: envelope.ReasonSigner},
		{name: "forged-sender-unregistered-cert", signer: mallory, reason: agent.ReasonBadSignature, local: envelope.ReasonSigner},
		{name: "forged-sender-foreign-ca", signer: foreign, reason: agent.ReasonBadSignature, local: envelope.ReasonChain},
		{name: "manifest-to-other-receiver", signer: tr.Account, mod: func(m *envelope.Manifest) { m.To = brg.ID },
			reason: agent.ReasonBindingMismatch, local: envelope.ReasonBinding},
		{name: "manifest-from-other-sender", signer: tr.Account, mod: func(m *envelope.Manifest) { m.From = brg.ID },
			reason: agent.ReasonBindingMismatch, local: envelope.ReasonBinding},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := len(rec.delivered())
			m := &envelope.Manifest{ID: uuid.NewString(), Type: schemas.TypeSakOverforing, From: tr.ID, To: osl.ID,
				Expires: time.Now().Add(time.Hour).UTC().Truncate(time.Second)}
			if tc.mod != nil {
				tc.mod(m)
			}
			b := sealExample(t, m, tc.signer, osl.Account.Cert)
			if tc.tamper != nil {
				b = tc.tamper(b)
			}
			// The envelope fails (or passes) Oslo's checks for the intended
			// reason, not by accident of how it was made.
			if got := openAsOslo(t, b, n, tr, osl, m.ID); got != tc.local {
				t.Fatalf("opening locally: reason %q, want %q", got, tc.local)
			}
			sum := sha256.Sum256(b)
			r := api.Routing{ID: m.ID, From: tr.ID, To: osl.ID, Type: schemas.TypeSakOverforing, Expires: m.Expires,
				Size: int64(len(b)), Digest: "sha-256=:" + base64.StdEncoding.EncodeToString(sum[:]) + ":"}
			if _, err := gw.Submit(t.Context(), r, bytes.NewReader(b)); err != nil {
				t.Fatalf("submit: %v", err)
			}

			if tc.reason == "" {
				agenttest.Poll(t, "delivery to the adapter", func() bool { return len(rec.delivered()) == before+1 })
				if got := rec.delivered()[before]; got != m.ID {
					t.Fatalf("adapter got %s, want %s", got, m.ID)
				}
				agenttest.Poll(t, "delivered at the gateway", func() bool {
					st, err := gw.Status(t.Context(), m.ID)
					return err == nil && st.State == api.StateDelivered
				})
				return
			}

			// Oslo handled it: recorded as rejected with the reason, no files.
			agenttest.Poll(t, "rejected at oslo", func() bool { return outState(osl.Agent, m.ID) == localapi.InRejected })
			d, err := osl.Agent.Message(m.ID)
			if err != nil {
				t.Fatal(err)
			}
			if len(d.Files) != 0 || len(d.Reasons) == 0 || d.Reasons[0].Code != tc.reason {
				t.Fatalf("oslo's record: files %v reasons %+v, want no files and reason %s", d.Files, d.Reasons, tc.reason)
			}

			// The gateway holds it as rejected (terminal), and Trondheim's
			// mailbox has the gateway's signed rejected notice.
			claims := box.notice(t, m.ID, api.EventRejected)
			if claims.From != tr.ID || claims.To != osl.ID || claims.Reason != string(errs.InvalidEnvelope) || claims.Digest != r.Digest {
				t.Fatalf("rejected notice %+v", claims)
			}
			st, err := gw.Status(t.Context(), m.ID)
			if err != nil || st.State != api.StateRejected {
				t.Fatalf("gateway status %+v %v, want rejected", st, err)
			}

			// The avvist receipt: an envelope from Oslo to Trondheim, signed
			// with Oslo's registered certificate, naming the message and the
			// reason.
			path := box.receipt(t, m.ID)
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			opened, err := envelope.Open(t.Context(), f, filepath.Join(t.TempDir(), "avvist"), envelope.OpenOptions{
				Keys:        []envelope.Key{{Cert: tr.Account.Cert, Decrypter: tr.Account.Key.(crypto.Decrypter)}},
				Roots:       n.PKI.Pool,
				SenderCerts: []*x509.Certificate{osl.Account.Cert},
				Expect:      envelope.Binding{Type: schemas.TypeAvvist, From: osl.ID, To: tr.ID},
			})
			if err != nil {
				t.Fatalf("open avvist receipt: %v", err)
			}
			if !opened.SignerCert.Equal(osl.Account.Cert) {
				t.Fatalf("avvist signed by %q, want oslo", opened.SignerCert.Subject.CommonName)
			}
			if signer, err := envelope.VerifySignature(opened.ManifestBytes, opened.Signature, n.PKI.Pool, time.Now()); err != nil || !signer.Equal(osl.Account.Cert) {
				t.Fatalf("avvist signature does not verify as oslo's: %v", err)
			}
			if opened.Manifest.InReplyTo != m.ID {
				t.Fatalf("avvist in_reply_to %q, want %s", opened.Manifest.InReplyTo, m.ID)
			}
			melding, err := os.ReadFile(filepath.Join(opened.Dir, localapi.MetadataFile))
			if err != nil {
				t.Fatal(err)
			}
			if err := schemas.Default().Validate(schemas.TypeAvvist, melding, nil); err != nil {
				t.Fatalf("avvist melding.json fails its schema: %v", err)
			}
			var av schemas.Avvist
			if err := json.Unmarshal(melding, &av); err != nil {
				t.Fatal(err)
			}
			if av.MessageID != m.ID || av.MessageType != schemas.TypeSakOverforing || len(av.Reasons) != 1 || av.Reasons[0].Code != tc.reason {
				t.Fatalf("avvist %+v, want message %s and reason %s", av, m.ID, tc.reason)
			}

			// Nothing reached Oslo's case system, then or later.
			if got := rec.delivered(); len(got) != before {
				t.Fatalf("adapter got %v", got[before:])
			}
		})
	}
	if calls := rec.callCount(); calls != 1 {
		t.Fatalf("adapter called %d times, want once (the control)", calls)
	}
}

// sealExample seals the example case (valid melding.json and documents)
// with manifest m, signed by signer, encrypted to the receiver's cert.
func sealExample(t *testing.T, m *envelope.Manifest, signer *pkitest.Account, to *x509.Certificate) []byte {
	t.Helper()
	c := exampleCase(t)
	meta := c.Metadata
	files := []envelope.File{{Name: localapi.MetadataFile, MediaType: "application/json", Size: int64(len(meta)),
		Open: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(meta)), nil }}}
	for _, f := range c.Files {
		st, err := os.Stat(f.Path)
		if err != nil {
			t.Fatal(err)
		}
		p := f.Path
		files = append(files, envelope.File{Name: f.Name, MediaType: "text/plain", Size: st.Size(),
			Open: func() (io.ReadCloser, error) { return os.Open(p) }})
	}
	var out bytes.Buffer
	if err := envelope.Seal(t.Context(), &out, m, files, envelope.SealOptions{
		Signer: signer.Key, SignerCert: signer.Cert, Recipients: []*x509.Certificate{to},
	}); err != nil {
		t.Fatalf("seal: %v", err)
	}
	return out.Bytes()
}

// flipMiddle returns a copy of b with one bit of its middle byte flipped.
func flipMiddle(b []byte) []byte {
	b = bytes.Clone(b)
	b[len(b)/2] ^= 0x01
	return b
}

// openAsOslo opens b as Oslo's agent would (Trondheim's registered
// certificate, the routing header's binding) and returns the refusal
// reason, "" if it opens.
func openAsOslo(t *testing.T, b []byte, n *agenttest.Network, tr, osl *agenttest.Node, id string) envelope.Reason {
	t.Helper()
	_, err := envelope.Open(t.Context(), bytes.NewReader(b), filepath.Join(t.TempDir(), "probe"), envelope.OpenOptions{
		Keys:        []envelope.Key{{Cert: osl.Account.Cert, Decrypter: osl.Account.Key.(crypto.Decrypter)}},
		Roots:       n.PKI.Pool,
		SenderCerts: []*x509.Certificate{tr.Account.Cert},
		Expect:      envelope.Binding{ID: id, Type: schemas.TypeSakOverforing, From: tr.ID, To: osl.ID},
	})
	return envelope.ReasonOf(err)
}

// mailbox reads an account's gateway mailbox directly: it verifies notices
// and keeps them by the message they are about, downloads message items
// (receipts) to files kept by the message they answer, and acks every item.
type mailbox struct {
	c        *client.Client
	notices  map[string][]api.NoticeClaims // message id -> verified notices
	receipts map[string][]string           // in_reply_to -> avvist envelope files
}

// fetch takes one batch of items (waiting up to a second).
func (b *mailbox) fetch(t *testing.T) {
	t.Helper()
	items, err := b.c.Poll(t.Context(), time.Second, 10)
	if err != nil {
		t.Fatalf("poll mailbox: %v", err)
	}
	for _, it := range items {
		switch it.Kind {
		case api.KindNotice:
			claims, err := b.c.VerifyNotice(it.Notice)
			if err != nil {
				t.Fatalf("gateway notice does not verify: %v", err)
			}
			b.notices[claims.MessageID] = append(b.notices[claims.MessageID], claims)
		case api.KindMessage:
			if it.Routing.Type == schemas.TypeAvvist {
				p := filepath.Join(t.TempDir(), it.Routing.ID+".env")
				f, err := os.Create(p)
				if err != nil {
					t.Fatal(err)
				}
				err = b.c.Download(t.Context(), it.Routing.ID, f)
				f.Close()
				if err != nil {
					t.Fatalf("download receipt: %v", err)
				}
				b.receipts[it.Routing.InReplyTo] = append(b.receipts[it.Routing.InReplyTo], p)
			}
		}
		if err := b.c.Ack(t.Context(), it.Routing.ID); err != nil {
			t.Fatalf("ack %s: %v", it.Kind, err)
		}
	}
}

// notice waits for the verified notice of event about message id.
func (b *mailbox) notice(t *testing.T, id, event string) api.NoticeClaims {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		for _, c := range b.notices[id] {
			if c.Event == event {
				return c
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s notice for %s; have %+v", event, id, b.notices[id])
		}
		b.fetch(t)
	}
}

// receipt waits for the single avvist receipt answering message id.
func (b *mailbox) receipt(t *testing.T, id string) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for len(b.receipts[id]) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no avvist receipt for %s", id)
		}
		b.fetch(t)
	}
	if len(b.receipts[id]) != 1 {
		t.Fatalf("%d avvist receipts for %s, want 1", len(b.receipts[id]), id)
	}
	return b.receipts[id][0]
}
