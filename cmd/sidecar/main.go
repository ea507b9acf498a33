// Command sidecar is tender's data plane. `sidecar run` is the proxy;
// `sidecar init` writes a pod's iptables capture rules, as an init
// container does.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := dispatch(ctx, os.Args[1:], os.Stdout)
	stop()
	switch {
	case errors.Is(err, flag.ErrHelp):
	case errors.Is(err, errUsage):
		os.Exit(2)
	case err != nil:
		fmt.Fprintln(os.Stderr, "sidecar:", err)
		os.Exit(1)
	}
}

var errUsage = errors.New("usage")

func dispatch(ctx context.Context, args []string, out io.Writer) error {
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "usage: sidecar run|init|wait [flags]")
		return errUsage
	}
	switch args[0] {
	case "run":
		cfg, err := parseRunFlags(args[1:])
		if err != nil {
			return err
		}
		return runSidecar(ctx, cfg, os.Stderr, os.Stdout)
	case "init":
		cfg, err := parseInitFlags(args[1:])
		if err != nil {
			return err
		}
		return runInit(ctx, cfg, out)
	case "wait":
		return runWait(ctx, args[1:])
	}
	fmt.Fprintf(os.Stderr, "sidecar: unknown command %q; usage: sidecar run|init|wait [flags]\n", args[0])
	return errUsage
}
