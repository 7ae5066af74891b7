// Command adapter is an example external adapter: a small program that talks
// to a kurer agent only through its local API. It copies every received
// message into --out/<message id>/ and marks it processed, which sends the
// signed behandlet receipt back to the sender.
//
//	go run ./examples/adapter --agent http://127.0.0.1:7482 --token-file examples/dev/agent.token --out /tmp/case-system-inbox
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/kurer/kurer/agent/localapi"
	"github.com/kurer/kurer/examples/adapter/inboxsync"
)

func main() {
	agentURL := flag.String("agent", "http://127.0.0.1:7480", "the agent's local API URL (or unix:///path.sock)")
	tokenFile := flag.String("token-file", "", "file holding the local API token (or set KURER_AGENT_TOKEN)")
	out := flag.String("out", "", "folder the received messages are copied to")
	once := flag.Bool("once", false, "take what is there now and exit")
	flag.Parse()
	if *out == "" {
		fmt.Fprintln(os.Stderr, "adapter: --out is required")
		os.Exit(2)
	}
	token := os.Getenv("KURER_AGENT_TOKEN")
	if token == "" && *tokenFile != "" {
		b, err := os.ReadFile(*tokenFile)
		if err != nil {
			fmt.Fprintf(os.Stderr, "adapter: token: %v\n", err)
			os.Exit(2)
		}
		token = strings.TrimSpace(string(b))
	}
	if err := os.MkdirAll(*out, 0o750); err != nil {
		fmt.Fprintf(os.Stderr, "adapter: %v\n", err)
		os.Exit(1)
	}
	c, err := localapi.NewClient(*agentURL, token)
	if err != nil {
		fmt.Fprintf(os.Stderr, "adapter: %v\n", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *once {
		n, err := inboxsync.Sync(ctx, c, *out)
		if err != nil {
			fmt.Fprintf(os.Stderr, "adapter: %v\n", err)
			os.Exit(1)
		}
		fmt.Printf("took %d message(s)\n", n)
		return
	}
	err = inboxsync.Watch(ctx, c, *out, func(n int) { fmt.Printf("took %d message(s)\n", n) })
	if err != nil {
		fmt.Fprintf(os.Stderr, "adapter: %v\n", err)
		os.Exit(1)
	}
}
