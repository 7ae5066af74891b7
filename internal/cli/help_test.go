package cli

import (
	"testing"

	"github.com/spf13/cobra"
)

// TestEveryCommandHasExamples: every runnable command's --help shows how it
// is used.
func TestEveryCommandHasExamples(t *testing.T) {
	n := 0
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Runnable() && !c.Hidden && c.Name() != "help" && c.Parent() != nil && c.Parent().Name() != "completion" {
			n++
			if c.Example == "" {
				t.Errorf("%s has no Example", c.CommandPath())
			}
		}
		for _, s := range c.Commands() {
			walk(s)
		}
	}
	walk(NewRootCommand())
	if n < 25 {
		t.Fatalf("walked only %d commands", n)
	}
}
