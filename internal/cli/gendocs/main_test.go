package main

import (
	"bytes"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDocsCurrent fails when docs/cli differs from what the commands
// generate: run `make docs` after changing a command.
func TestDocsCurrent(t *testing.T) {
	want := t.TempDir()
	if err := generate(want); err != nil {
		t.Fatal(err)
	}
	have := filepath.Join("..", "..", "..", "docs", "cli")
	gen, err := os.ReadDir(want)
	if err != nil {
		t.Fatal(err)
	}
	if len(gen) < 5 {
		t.Fatalf("generated only %d pages", len(gen))
	}
	for _, e := range gen {
		w, _ := os.ReadFile(filepath.Join(want, e.Name()))
		h, err := os.ReadFile(filepath.Join(have, e.Name()))
		if err != nil || !bytes.Equal(w, h) {
			t.Errorf("docs/cli/%s is missing or stale: run `make docs`", e.Name())
		}
	}
	cur, _ := os.ReadDir(have)
	for _, e := range cur {
		if _, err := os.Stat(filepath.Join(want, e.Name())); err != nil && strings.HasPrefix(e.Name(), "kurer") {
			t.Errorf("docs/cli/%s documents a command that no longer exists: run `make docs` after removing it", e.Name())
		}
	}
}

// TestExitCodesComplete checks that every Exit* constant of root.go is on
// the exit-codes page.
func TestExitCodesComplete(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), filepath.Join("..", "root.go"), nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	listed := map[string]bool{}
	for _, e := range exitCodes {
		listed[e.name] = true
	}
	n := 0
	ast.Inspect(f, func(x ast.Node) bool {
		vs, ok := x.(*ast.ValueSpec)
		if !ok {
			return true
		}
		for _, id := range vs.Names {
			if strings.HasPrefix(id.Name, "Exit") {
				n++
				if !listed[id.Name] {
					t.Errorf("exit code %s is not documented in gendocs", id.Name)
				}
			}
		}
		return true
	})
	if n != len(exitCodes) {
		t.Errorf("root.go has %d exit codes, the page %d", n, len(exitCodes))
	}
}
