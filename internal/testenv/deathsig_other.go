//go:build !linux

package testenv

import (
	"os"
	"os/exec"
)

// dieWithParent does nothing where there is no parent-death signal.
func dieWithParent(cmd *exec.Cmd, sig os.Signal) {}
