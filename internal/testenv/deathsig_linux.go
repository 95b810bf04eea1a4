package testenv

import (
	"os"
	"os/exec"
	"syscall"
)

// dieWithParent makes the kernel send sig to cmd's process when the test
// binary dies without running its cleanups (a test timeout's panic, a
// SIGKILL), so that no private server outlives it. The signal is set in
// the child after any credential change, so it holds for a server run as
// another user too.
func dieWithParent(cmd *exec.Cmd, sig os.Signal) {
	s, ok := sig.(syscall.Signal)
	if !ok {
		return
	}
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = s
}
