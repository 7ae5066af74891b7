package cli

import "github.com/spf13/cobra"

// newGatewayCommand is a placeholder until its issue lands; it is replaced, not extended.
func newGatewayCommand() *cobra.Command {
	return &cobra.Command{Use: "gateway", Short: "(not yet built)", Hidden: true}
}
