// Package cli builds kurer's cobra command tree. Each command group lives in
// its own file with one constructor and one options struct (STYLE.md 2);
// cmd/kurer only builds the root and maps the error to an exit code.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"
)

// Version is set at build time with -ldflags "-X github.com/kurer/kurer/internal/cli.Version=...".
var Version = "dev"

// Exit codes (docs/cli/exit-codes.md).
const (
	ExitOK          = 0 // success
	ExitError       = 1 // any failure not listed below
	ExitUsage       = 2 // bad flags or arguments
	ExitVerify      = 3 // a verification failed: envelope, signature, receipt, audit chain
	ExitUnavailable = 4 // a peer (gateway, agent) could not be reached
	ExitNotDone     = 5 // --wait / --once: the message did not reach the expected state
)

// ExitError carries an exit code through cobra's error return.
type ExitErr struct {
	Code int
	Err  error
}

func (e *ExitErr) Error() string { return e.Err.Error() }
func (e *ExitErr) Unwrap() error { return e.Err }

// exitf wraps a formatted error with an exit code.
func exitf(code int, format string, args ...any) error {
	return &ExitErr{Code: code, Err: fmt.Errorf(format, args...)}
}

// NewRootCommand returns the kurer root command.
func NewRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "kurer",
		Short: "Secure exchange of child-welfare case files between municipalities",
		Long: `kurer moves child-welfare (barnevern) case files and reports between
municipalities, the national concern-report portal and national registers:
signed, encrypted, with receipts, in seconds.

One binary: a central gateway (kurer gateway), an on-prem agent per
municipality (kurer agent), and tools to send, follow and inspect messages.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       Version,
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error {
		return &ExitErr{Code: ExitUsage, Err: err}
	})
	root.AddCommand(
		newEnvelopeCommand(),
		newDevCertsCommand(),
		newSchemaCommand(),
		newGatewayCommand(),
		newAgentCommand(),
		newSendCommand(),
		newStatusCommand(),
		newDemoCommand(),
		newBenchCommand(),
		newVersionCommand(),
	)
	return root
}

// Execute runs the root command with args and returns the process exit code,
// printing a one-line error to stderr on failure.
func Execute(args []string, stdout, stderr io.Writer) int {
	return ExecuteContext(context.Background(), args, stdout, stderr)
}

// ExecuteContext is Execute with a context that commands get from
// cmd.Context(); main passes one that ends on SIGINT/SIGTERM.
func ExecuteContext(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := NewRootCommand()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return ExitOK
	}
	fmt.Fprintf(stderr, "kurer: %v\n", err)
	var ee *ExitErr
	if errors.As(err, &ee) {
		return ee.Code
	}
	return ExitError
}
