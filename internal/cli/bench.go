package cli

import "github.com/spf13/cobra"

func newBenchCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Run benchmarks that print figures (envelope, gateway, pipeline)",
	}
	cmd.AddCommand(newBenchEnvelopeCommand(), newBenchGatewayCommand(), newBenchPipelineCommand())
	return cmd
}
