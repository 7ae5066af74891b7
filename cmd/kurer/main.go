// Command kurer is the single kurer binary: gateway, agent and tools.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/kurer/kurer/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// After the first signal, restore the default handling so that a second
	// Ctrl-C ends a shutdown that hangs.
	go func() { <-ctx.Done(); stop() }()
	code := cli.ExecuteContext(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
