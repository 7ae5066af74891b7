package webhook

// verifyWebhook is the receiver's check exactly as docs/agent.md
// ("Webhook adapter", "Verifying a request") shows it to case systems; keep
// the two in step. It is written against the wire format only (its own
// types), not against this package's signing code.

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"strconv"
	"strings"
	"time"
)

type wireFile struct {
	Name      string `json:"name"`
	Size      int64  `json:"size"`
	SHA256    string `json:"sha256"`
	MediaType string `json:"media_type"`
}

type wireMetadata struct {
	ID              string     `json:"id"`
	Type            string     `json:"type"`
	From            string     `json:"from"`
	To              string     `json:"to"`
	Conversation    string     `json:"conversation"`
	InReplyTo       string     `json:"in_reply_to"`
	Created         time.Time  `json:"created"`
	Expires         time.Time  `json:"expires"`
	ReceiptID       string     `json:"receipt_id"`
	Files           []wireFile `json:"files"`
	ManifestSHA256  string     `json:"manifest_sha256"`
	SignatureSHA256 string     `json:"signature_sha256"`
}

var errBadSignature = errors.New("bad signature")

// verifyWebhook checks the signature headers of a kurer webhook request,
// then reads its multipart body part by part, handing each file, the
// manifest and the signature to keep while checking its size and SHA-256
// against the signed metadata. Any error: answer 401 (errBadSignature) or
// 400, and throw away what keep stored.
func verifyWebhook(r *http.Request, secret []byte, now time.Time,
	keep func(part, filename string, body io.Reader) error) (*wireMetadata, error) {
	id := r.Header.Get("Kurer-Message-Id")
	ts, err := strconv.ParseInt(r.Header.Get("Kurer-Timestamp"), 10, 64)
	if err != nil {
		return nil, errBadSignature
	}
	if age := now.Sub(time.Unix(ts, 0)); age > 5*time.Minute || age < -5*time.Minute {
		return nil, errBadSignature // stale or from the future: a replay?
	}
	metaSum := r.Header.Get("Kurer-Metadata-Sha256")
	mac := hmac.New(sha256.New, secret)
	fmt.Fprintf(mac, "%d.%s.%s", ts, id, metaSum)
	want := []byte("v1=" + hex.EncodeToString(mac.Sum(nil)))
	ok := false
	for _, sig := range strings.Split(r.Header.Get("Kurer-Signature"), ",") {
		ok = ok || hmac.Equal([]byte(strings.TrimSpace(sig)), want)
	}
	if !ok {
		return nil, errBadSignature
	}

	mt, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/form-data" {
		return nil, errors.New("not multipart/form-data")
	}
	mr := multipart.NewReader(r.Body, params["boundary"])
	next := func(wantName string) (*multipart.Part, string, error) {
		p, err := mr.NextRawPart()
		if err != nil {
			return nil, "", fmt.Errorf("part %s: %w", wantName, err)
		}
		_, cd, err := mime.ParseMediaType(p.Header.Get("Content-Disposition"))
		if err != nil || cd["name"] != wantName {
			return nil, "", fmt.Errorf("want part %s", wantName)
		}
		return p, cd["filename"], nil // the whole name; p.FileName() drops folders
	}
	// check hands a part to keep, hashing it as keep reads, and compares
	// it with the signed metadata. size < 0: no size given.
	check := func(p *multipart.Part, part, filename string, size int64, sum string) error {
		limit := size + 1
		if size < 0 {
			limit = 16 << 20
		}
		h := sha256.New()
		cr := &countReader{r: io.TeeReader(io.LimitReader(p, limit), h)}
		if err := keep(part, filename, cr); err != nil {
			return err
		}
		if _, err := io.Copy(io.Discard, cr); err != nil {
			return err
		}
		if (size >= 0 && cr.n != size) || hex.EncodeToString(h.Sum(nil)) != sum {
			return fmt.Errorf("%s does not match the signed metadata", part)
		}
		return nil
	}

	p, _, err := next("metadata")
	if err != nil {
		return nil, err
	}
	meta, err := io.ReadAll(io.LimitReader(p, 16<<20))
	if err != nil {
		return nil, err
	}
	if s := sha256.Sum256(meta); hex.EncodeToString(s[:]) != metaSum {
		return nil, errBadSignature
	}
	var md wireMetadata
	if err := json.Unmarshal(meta, &md); err != nil || md.ID != id {
		return nil, errors.New("metadata does not match the headers")
	}
	for _, f := range md.Files {
		p, name, err := next("file")
		if err != nil {
			return nil, err
		}
		if name != f.Name {
			return nil, errors.New("file parts out of order")
		}
		if err := check(p, "file", f.Name, f.Size, f.SHA256); err != nil {
			return nil, err
		}
	}
	if p, _, err = next("manifest"); err != nil {
		return nil, err
	}
	if err := check(p, "manifest", "manifest.json", -1, md.ManifestSHA256); err != nil {
		return nil, err
	}
	if p, _, err = next("signature"); err != nil {
		return nil, err
	}
	if err := check(p, "signature", "signature.p7s", -1, md.SignatureSHA256); err != nil {
		return nil, err
	}
	if _, err := mr.NextRawPart(); err != io.EOF {
		return nil, errors.New("unexpected part after the signature")
	}
	return &md, nil
}

type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
