package cli

import "github.com/spf13/cobra"

// newAgentCommand is a placeholder until its issue lands; it is replaced, not extended.
func newAgentCommand() *cobra.Command {
	return &cobra.Command{Use: "agent", Short: "(not yet built)", Hidden: true}
}
