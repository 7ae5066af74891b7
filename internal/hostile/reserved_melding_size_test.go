package hostile_test

import (
	"bytes"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/kurer/kurer/agent/agenttest"
	"github.com/kurer/kurer/agent/localapi"
	"github.com/kurer/kurer/envelope"
	"github.com/kurer/kurer/internal/errs"
	"github.com/kurer/kurer/schemas"
)

// TestAgentRefusesOversizeMelding: Trondheim's account seals (by hand, past
// its agent's schema check) a case whose melding.json is one byte over
// schemas.MaxMeldingSize and puts it into the real gateway for Oslo. Oslo's
// agent reads melding.json only up to the limit and refuses the case like
// any schema failure: rejected with schema_invalid and field code
// too_large, nothing in its inbox folder, the gateway item rejected, and a
// signed avvist with too_large back to Trondheim. (That the melding is not
// read whole is agent/reserved_melding_limit_test.go's.)
func TestAgentRefusesOversizeMelding(t *testing.T) {
	n := agenttest.NewNetwork(t, "trondheim", "oslo")
	if err := n.Stop("trondheim"); err != nil { // its mailbox keeps the avvist for avvistFor
		t.Fatal(err)
	}
	osl := n.Nodes["oslo"]
	c := n.Client("trondheim")
	_, docs := loadExample(t)
	var files []envelope.File
	for _, d := range docs {
		files = append(files, fileOf(d.name, d.path))
	}
	// One JSON value one byte over the limit: the example's melding with
	// a member padded with random letters (spaces would compress past the
	// envelope's ratio limit and be refused at open, not as a melding).
	m, _ := loadExample(t)
	m["pad"] = ""
	valid := mustJSON(t, m)
	rnd := rand.New(rand.NewPCG(1, 2))
	pad := make([]byte, schemas.MaxMeldingSize+1-len(valid))
	for i := range pad {
		pad[i] = 'a' + byte(rnd.IntN(26))
	}
	m["pad"] = string(pad)
	melding := mustJSON(t, m)
	if len(melding) != schemas.MaxMeldingSize+1 {
		t.Fatalf("melding of %d bytes", len(melding))
	}
	data, rt, err := sealCase(t, n, "trondheim", "oslo", melding, files)
	if err != nil {
		t.Fatalf("seal: %v", err)
	}
	if _, err := c.Submit(t.Context(), rt, bytes.NewReader(data)); err != nil {
		t.Fatalf("submit: %v", err)
	}
	var d localapi.MessageDetail
	agenttest.Poll(t, "oslo to refuse the message", func() bool {
		d, err = osl.Agent.Message(rt.ID)
		return err == nil && d.State == localapi.InRejected
	})
	if last := d.History[len(d.History)-1]; last.Reason != string(errs.SchemaInvalid) {
		t.Fatalf("history reason %q, want %s", last.Reason, errs.SchemaInvalid)
	}
	if len(d.Files) != 0 || !slices.ContainsFunc(d.Reasons, func(r localapi.Reason) bool { return r.Code == schemas.CodeTooLarge }) {
		t.Fatalf("refused message: %d files released, reasons %+v; want none and %s", len(d.Files), d.Reasons, schemas.CodeTooLarge)
	}
	av := avvistFor(t, n, rt.ID)
	if !slices.ContainsFunc(av.Reasons, func(r schemas.Reason) bool { return r.Code == schemas.CodeTooLarge }) {
		t.Fatalf("avvist reasons %+v, want %s", av.Reasons, schemas.CodeTooLarge)
	}
	refusedLeavingNothing(t, n, osl, rt.ID)
}
