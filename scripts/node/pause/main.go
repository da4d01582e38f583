// Command pause is the sandbox ("pause") container of the real node's pods: it holds the
// pod's namespaces, reaps children that get re-parented to it, and exits on SIGTERM or SIGINT.
// Built here (scripts/build-node.sh) because no registry with the upstream image is reachable.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for s := range signals {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var status syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
