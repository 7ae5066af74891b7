package audit

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/valid.log")

// generateGolden rewrites testdata/valid.log (go test -run TestFormatStable -update).
func generateGolden(t *testing.T) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "valid.log")
	l := openLog(t, path, Options{NoHead: true})
	for i := range 5 {
		if _, err := l.Append(context.Background(), "gateway", "message.accepted", fmt.Sprintf("msg-%d", i),
			map[string]string{"sender": "acc-1", "code": "<ok&>"}); err != nil {
			t.Fatal(err)
		}
	}
	l.Close()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile("testdata/valid.log", data, 0o644); err != nil {
		t.Fatal(err)
	}
	rep, _ := VerifyWith("testdata/valid.log", VerifyOptions{NoHead: true})
	t.Logf("new last hash %s: update goldenLastHash", rep.LastHash)
}
