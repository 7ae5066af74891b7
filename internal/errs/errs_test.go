package errs

import (
	"errors"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
)

// TestCatalogueDocumented keeps docs/errors.md in step with the catalogue.
func TestCatalogueDocumented(t *testing.T) {
	doc, err := os.ReadFile("../../docs/errors.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range Codes() {
		row := "| `" + string(c) + "` |"
		if !strings.Contains(string(doc), row) {
			t.Errorf("docs/errors.md lacks a row for %s", c)
		}
	}
}

// TestWriteKeepsCauseInside checks that the wire body carries the code, the
// fixed message and the public detail, and never the internal cause.
func TestWriteKeepsCauseInside(t *testing.T) {
	rec := httptest.NewRecorder()
	e := &Error{Code: DigestMismatch, Detail: "Content-Digest", Cause: errors.New("/var/lib/kurer/spool/x: secret internal path")}
	Write(rec, e)
	if rec.Code != 400 {
		t.Fatalf("status %d", rec.Code)
	}
	body := rec.Body.String()
	if strings.Contains(body, "secret") || strings.Contains(body, "/var/lib") {
		t.Fatalf("cause leaked: %s", body)
	}
	got := FromResponse(rec.Code, rec.Body.Bytes())
	if got.Code != DigestMismatch || got.Detail != "Content-Digest" {
		t.Fatalf("round trip %+v", got)
	}
	if CodeOf(errors.New("plain")) != Internal {
		t.Fatal("a plain error must map to internal_error")
	}
}

// TestFromResponseStatus checks the code a client gives an answer that is
// not a catalogue body (a proxy's page, say), by its status.
func TestFromResponseStatus(t *testing.T) {
	for _, tc := range []struct {
		status int
		want   Code
	}{
		{400, BadRequest},
		{404, NotFound},
		{405, MethodNotAllowed},
		{413, TooLarge},
		{416, RangeNotSatisfiable},
		{418, BadRequest},
		{502, Unavailable},
		{500, Internal},
	} {
		if got := FromResponse(tc.status, []byte("<html>proxy</html>")).Code; got != tc.want {
			t.Errorf("status %d: code %s, want %s", tc.status, got, tc.want)
		}
	}
	for _, c := range Codes() {
		if c.Status() < 400 || c.Message() == "" {
			t.Errorf("%s: status %d, message %q", c, c.Status(), c.Message())
		}
	}
}
