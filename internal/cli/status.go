package cli

import "github.com/spf13/cobra"

// newStatusCommand is a placeholder until its issue lands; it is replaced, not extended.
func newStatusCommand() *cobra.Command {
	return &cobra.Command{Use: "status", Short: "(not yet built)", Hidden: true}
}
