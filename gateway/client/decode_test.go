package client

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/kurer/kurer/gateway/api"
	"github.com/kurer/kurer/internal/errs"
)

// A success answer cut off in transit is a transport failure (retryable),
// not a malformed answer: the agent fails a message for good on
// malformed_json, although the gateway may already hold it (found by
// internal/crashtest TestCrashFaults with a reset fault).
func TestDecodeCutOffAnswerIsUnavailable(t *testing.T) {
	for _, c := range []struct {
		body string
		cut  bool
		want errs.Code
	}{
		{`{"id":"x","receipt":"abc"}`, true, errs.Unavailable},
		{`{"id":"x",`, false, errs.Unavailable},
		{`{"id":"x" "receipt"}`, false, errs.MalformedJSON},
		{`{"id":42}`, false, errs.MalformedJSON},
	} {
		var body io.Reader = strings.NewReader(c.body)
		if c.cut {
			body = io.MultiReader(strings.NewReader(c.body[:10]), errReader{io.ErrUnexpectedEOF})
		}
		resp := &http.Response{StatusCode: http.StatusCreated, Body: io.NopCloser(body)}
		var out api.SubmitResponse
		if got := errs.CodeOf(decode(resp, &out)); got != c.want {
			t.Errorf("%q (cut %v): %s, want %s", c.body, c.cut, got, c.want)
		}
	}
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }
