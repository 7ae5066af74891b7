package cli

import "github.com/spf13/cobra"

// newDevCertsCommand is a placeholder until its issue lands; it is replaced, not extended.
func newDevCertsCommand() *cobra.Command {
	return &cobra.Command{Use: "dev-certs", Short: "(not yet built)", Hidden: true}
}
