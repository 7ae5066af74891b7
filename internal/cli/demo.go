package cli

import "github.com/spf13/cobra"

// newDemoCommand is a placeholder until its issue lands; it is replaced, not extended.
func newDemoCommand() *cobra.Command {
	return &cobra.Command{Use: "demo", Short: "(not yet built)", Hidden: true}
}
