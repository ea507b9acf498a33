// Command pause is the one-node cluster's pod sandbox process (the
// "pause" container every pod starts with): it holds the pod's namespaces,
// reaps the zombies it inherits as PID 1, and exits on SIGINT or SIGTERM.
// Kubernetes' own is a C program in a registry the lab cannot reach; this
// one is built here into the pause image (`make images`).
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range sigs {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var ws syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
