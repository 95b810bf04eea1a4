// Command pause is the pod sandbox process of the nodes kubeletenv starts
// (containerd's sandbox_image): it holds the pod's namespaces until SIGTERM
// or SIGINT, reaping the orphans it inherits as the pod's PID 1. It is the
// equivalent of registry.k8s.io/pause, built from source because the tests
// pull no image.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sig := make(chan os.Signal, 4)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for s := range sig {
		if s != syscall.SIGCHLD {
			return
		}
		for {
			pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
