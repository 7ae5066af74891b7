package agent_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/kurer/kurer/agent/agenttest"
	"github.com/kurer/kurer/agent/localapi"
	"github.com/kurer/kurer/schemas"
)

// TestRealGatewayFolderToFolder sends the example case through Trondheim's
// folder outbox over a real gateway and checks that it appears in Oslo's
// inbox folder with the same bytes and that the receipt comes back.
func TestRealGatewayFolderToFolder(t *testing.T) {
	n := agenttest.NewNetwork(t, "trondheim", "oslo")
	tr, osl := n.Nodes["trondheim"], n.Nodes["oslo"]
	src := filepath.Join("..", "examples", "cases", "sak-overforing")
	build := filepath.Join(tr.Outbox, ".case1.partial")
	copyTree(t, src, build)
	caseJSON := `{"type":"` + schemas.TypeSakOverforing + `","to":"municipality:0301"}`
	if err := os.WriteFile(filepath.Join(build, "case.json"), []byte(caseJSON), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(build, filepath.Join(tr.Outbox, "case1")); err != nil {
		t.Fatal(err)
	}
	var id string
	agenttest.Poll(t, "inbox folder", func() bool {
		e, _ := os.ReadDir(osl.Inbox)
		for _, x := range e {
			if x.IsDir() && x.Name()[0] != '.' {
				id = x.Name()
				return true
			}
		}
		return false
	})
	compareTree(t, src, filepath.Join(osl.Inbox, id))
	agenttest.Poll(t, "received at sender", func() bool {
		d, err := tr.Agent.Message(id)
		return err == nil && d.State == localapi.StateReceived
	})
}

func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.Walk(src, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if info.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o750)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// compareTree checks every file of src is in dst with the same bytes.
func compareTree(t *testing.T, src, dst string) {
	t.Helper()
	files := 0
	err := filepath.Walk(src, func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		want, _ := os.ReadFile(p)
		got, err := os.ReadFile(filepath.Join(dst, rel))
		if err != nil {
			t.Errorf("%s missing in inbox: %v", rel, err)
			return nil
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs", rel)
		}
		files++
		return nil
	})
	if err != nil || files == 0 {
		t.Fatalf("compare: %v, %d files", err, files)
	}
}
