package client

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"testing"
	"time"

	"github.com/kurer/kurer/gateway/api"
	"github.com/kurer/kurer/internal/errs"
)

// pollAnswers builds the JSON and the multipart answer to the same poll of
// n messages of size bytes each, laid out as the gateway writes them.
func pollAnswers(tb testing.TB, n, size int) (jsonBody, mpBody []byte, boundary string) {
	tb.Helper()
	out := api.MailboxResponse{}
	for i := range n {
		b := bytes.Repeat([]byte{byte(i)}, size)
		for j := range b {
			b[j] ^= byte(j * 7)
		}
		out.Items = append(out.Items, api.MailboxItem{Kind: api.KindMessage, Attempt: 1,
			LeaseUntil: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC),
			Routing: api.Routing{ID: fmt.Sprintf("5d0f1f4e-8a53-4d8e-b1a5-0c2d3e4f5a%02d", i),
				From: "0b6f2c1e-8d4a-4f3b-9c2d-1a2b3c4d5e6f", To: "3f1e2d3c-4b5a-4697-8877-665544332211",
				Type: "no.kurer.barnevern.sak.overforing.v1", Expires: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC),
				Size: int64(size), Digest: contentDigest(b)},
			Content: b})
	}
	jsonBody, err := json.Marshal(out)
	if err != nil {
		tb.Fatal(err)
	}
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	jp, _ := mw.CreatePart(textproto.MIMEHeader{"Content-Type": {api.MediaJSON}})
	contents := make([][]byte, n)
	for i := range out.Items {
		contents[i], out.Items[i].Content = out.Items[i].Content, nil
	}
	if err := json.NewEncoder(jp).Encode(out); err != nil {
		tb.Fatal(err)
	}
	for i, b := range contents {
		p, _ := mw.CreatePart(textproto.MIMEHeader{"Content-Type": {api.MediaOctetStream},
			api.HeaderMessageID: {out.Items[i].Routing.ID}, api.HeaderDigest: {out.Items[i].Routing.Digest}})
		_, _ = p.Write(b)
	}
	if err := mw.Close(); err != nil {
		tb.Fatal(err)
	}
	return jsonBody, buf.Bytes(), mw.Boundary()
}

func pollResponse(body []byte, contentType string) *http.Response {
	return &http.Response{StatusCode: http.StatusOK, Header: http.Header{"Content-Type": {contentType}},
		Body: io.NopCloser(bytes.NewReader(body))}
}

// BenchmarkPollDecode compares the client's decode of a poll answer with
// 8 envelopes of 10 KiB inline: base64 in JSON against raw in multipart.
// Both include the digest check of every envelope.
func BenchmarkPollDecode(b *testing.B) {
	const n, size = 8, 10 << 10
	jsonBody, mpBody, boundary := pollAnswers(b, n, size)
	for _, bc := range []struct {
		name, contentType string
		body              []byte
	}{
		{"json", api.MediaJSON, jsonBody},
		{"multipart", api.MediaMultipart + "; boundary=" + boundary, mpBody},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(n * size)
			for b.Loop() {
				items, err := decodePoll(pollResponse(bc.body, bc.contentType), 16<<10, 10)
				if err != nil || len(items) != n || len(items[n-1].Content) != size {
					b.Fatalf("%d items, %v", len(items), err)
				}
			}
		})
	}
}

// FuzzDecodePollMultipart: a multipart poll answer, however hostile, never
// panics the client, fails only with the answer codes, and what it accepts
// carries content only for messages, each within the asked size and
// matching its routing.
func FuzzDecodePollMultipart(f *testing.F) {
	_, mp, boundary := pollAnswers(f, 3, 100)
	f.Add(mp, boundary)
	f.Add(mp[:len(mp)/2], boundary)
	f.Add(bytes.ReplaceAll(mp, []byte("Kurer-Message-Id: 5d0f1f4e-8a53-4d8e-b1a5-0c2d3e4f5a01"),
		[]byte("Kurer-Message-Id: 5d0f1f4e-8a53-4d8e-b1a5-0c2d3e4f5a00")), boundary)
	f.Add([]byte("--b\r\nContent-Type: application/json\r\n\r\n{\"items\":[{\"kind\":\"notice\",\"routing\":{\"id\":\"n\"}}]}\r\n--b\r\n"+
		"Content-Type: application/octet-stream\r\nKurer-Message-Id: n\r\n\r\nxx\r\n--b--\r\n"), "b")
	f.Add([]byte("--b--\r\n"), "b")
	f.Fuzz(func(t *testing.T, body []byte, boundary string) {
		const inline = 200
		items, err := decodePoll(pollResponse(body, api.MediaMultipart+"; boundary=\""+boundary+"\""), inline, 10)
		if err != nil {
			switch c := errs.CodeOf(err); c {
			case errs.MalformedJSON, errs.TooLarge, errs.Unavailable:
			default:
				t.Fatalf("code %s: %v", c, err)
			}
			return
		}
		for _, it := range items {
			if it.Content == nil {
				continue
			}
			if it.Kind != api.KindMessage || len(it.Content) > inline ||
				int64(len(it.Content)) != it.Routing.Size || contentDigest(it.Content) != it.Routing.Digest {
				t.Fatalf("accepted content %d bytes for %+v", len(it.Content), it)
			}
		}
	})
}
