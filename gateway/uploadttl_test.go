package gateway_test

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/kurer/kurer/gateway/api"
	"github.com/kurer/kurer/gateway/client"
	"github.com/kurer/kurer/gateway/gatewaytest"
	"github.com/kurer/kurer/internal/errs"
)

// cutBody gives n bytes of r, then fails: a connection cut mid-upload.
type cutBody struct {
	r io.Reader
	n int
}

func (c *cutBody) Read(p []byte) (int, error) {
	if c.n <= 0 {
		return 0, errors.New("cut")
	}
	p = p[:min(len(p), c.n)]
	k, err := c.r.Read(p)
	c.n -= k
	return k, err
}

// startCutUpload PUTs body for r and cuts it after n bytes, then waits
// until the gateway holds a partial upload of them.
func startCutUpload(t *testing.T, e *gatewaytest.Env, c *client.Client, r api.Routing, body []byte, n int) {
	t.Helper()
	tok, err := c.Token(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPut, e.URL()+api.PathMessages+r.ID, &cutBody{r: bytes.NewReader(body), n: n})
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = int64(len(body))
	for k, v := range map[string]string{
		"Authorization": "Bearer " + tok, api.HeaderFrom: r.From, api.HeaderTo: r.To, api.HeaderType: r.Type,
		api.HeaderExpires: r.Expires.Format(time.RFC3339), api.HeaderDigest: r.Digest, api.HeaderSize: strconv.Itoa(len(body)),
	} {
		req.Header.Set(k, v)
	}
	if resp, err := client.NewHTTPClient(e.TLS).Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("cut upload answered %s", resp.Status)
	}
	waitFor(t, "the partial upload", func() bool {
		off, err := c.UploadOffset(t.Context(), r.ID)
		return err == nil && off > 0
	})
}

func waitFor(t *testing.T, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond) // the sweeper runs every second
	}
}

func partialFiles(t *testing.T, e *gatewaytest.Env) int {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(e.Cfg.DataDir, "store", "partial"))
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// TestAbandonedUploadsAreDropped: a partial upload is kept for the sender
// to resume until its routing expires or upload_ttl has passed since it
// started; then the sweeper deletes its bytes and record, so abandoned
// uploads cannot fill the gateway's disk.
func TestAbandonedUploadsAreDropped(t *testing.T) {
	e := gatewaytest.New(t, nil) // upload_ttl: the default 24h
	oslo := e.Client("oslo")
	const size = 1 << 20
	bodyA, bodyB := gatewaytest.RandBytes(size), gatewaytest.RandBytes(size)
	a := e.Routing("oslo", "bergen", bodyA)
	a.Expires = e.Clock.Now().Add(48 * time.Hour).UTC().Truncate(time.Second)
	b := e.Routing("oslo", "bergen", bodyB)
	b.Expires = e.Clock.Now().Add(time.Hour).UTC().Truncate(time.Second)
	startCutUpload(t, e, oslo, a, bodyA, 600_000)
	startCutUpload(t, e, oslo, b, bodyB, 700_000)
	if n := partialFiles(t, e); n != 2 {
		t.Fatalf("%d partial files, want 2", n)
	}

	// Past b's expiry: b can never be accepted, its bytes go; a stays.
	e.Clock.Advance(2 * time.Hour)
	// The record goes first, then the bytes: wait for both.
	waitFor(t, "the expired upload to be dropped", func() bool {
		_, err := oslo.UploadOffset(t.Context(), b.ID)
		return errs.CodeOf(err) == errs.NotFound && partialFiles(t, e) == 1
	})
	if off, err := oslo.UploadOffset(t.Context(), a.ID); err != nil || off == 0 {
		t.Fatalf("live upload: offset %d, %v", off, err)
	}

	// A day after it started, a is abandoned: dropped although its
	// routing has a day left.
	e.Clock.Advance(23 * time.Hour)
	waitFor(t, "the abandoned upload to be dropped", func() bool {
		_, err := oslo.UploadOffset(t.Context(), a.ID)
		return errs.CodeOf(err) == errs.NotFound && partialFiles(t, e) == 0
	})

	// The sender can still send a: from zero, accepted once.
	if _, err := oslo.Submit(t.Context(), a, bytes.NewReader(bodyA)); err != nil {
		t.Fatalf("submit after the partial was dropped: %v", err)
	}
	if n := partialFiles(t, e); n != 0 {
		t.Fatalf("%d partial files after the accept, want 0", n)
	}
}

// TestBusyStaleUploadSweptNextPass: a stale upload that is busy when the
// sweep comes (a sender asking for its offset holds it for an fsync) is
// dropped at the sweeper's next pass once free, not a minute later, so a
// sender polling the offset cannot keep it alive (this made
// TestAbandonedUploadsAreDropped flaky under load).
func TestBusyStaleUploadSweptNextPass(t *testing.T) {
	e := gatewaytest.New(t, nil)
	oslo := e.Client("oslo")
	body := gatewaytest.RandBytes(1 << 20)
	r := e.Routing("oslo", "bergen", body)
	r.Expires = e.Clock.Now().Add(48 * time.Hour).UTC().Truncate(time.Second)
	startCutUpload(t, e, oslo, r, body, 600_000)

	release, ok := e.Srv.HoldUploadForTest(r.ID)
	if !ok {
		t.Fatal("the upload is locked with nothing running")
	}
	busy := e.Srv.BusyUploadsForTest()
	e.Clock.Advance(25 * time.Hour) // past upload_ttl
	waitFor(t, "a sweep to find the stale upload busy", func() bool { return e.Srv.BusyUploadsForTest() > busy })
	if n := partialFiles(t, e); n != 1 {
		t.Fatalf("%d partial files while the upload was busy, want 1", n)
	}
	release()
	// The fake clock stands still: only a retry at the next pass drops it.
	waitFor(t, "the stale upload to be dropped once free", func() bool {
		_, err := oslo.UploadOffset(t.Context(), r.ID)
		return errs.CodeOf(err) == errs.NotFound && partialFiles(t, e) == 0
	})
}
