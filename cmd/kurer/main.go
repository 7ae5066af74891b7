// Command kurer is the single kurer binary: gateway, agent and tools.
package main

import (
	"os"

	"github.com/kurer/kurer/internal/cli"
)

func main() {
	os.Exit(cli.Execute(os.Args[1:], os.Stdout, os.Stderr))
}
