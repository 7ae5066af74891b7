package cli

import "github.com/spf13/cobra"

// newSendCommand is a placeholder until its issue lands; it is replaced, not extended.
func newSendCommand() *cobra.Command {
	return &cobra.Command{Use: "send", Short: "(not yet built)", Hidden: true}
}
