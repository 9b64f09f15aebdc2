// Command mailnode runs a mail cluster node (serve) and administers a
// running one (domain, user, status) through its admin socket.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/mailcluster/mailcluster/node"
)

// version is set at build time: -ldflags "-X main.version=...".
var version = "dev"

func main() {
	// SIGINT or SIGTERM cancels ctx, which stops a serving node
	// gracefully; the cause names the signal.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := node.Stdio(version).Run(ctx, os.Args[1:])
	stop()
	os.Exit(code)
}
