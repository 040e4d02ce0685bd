package main

import (
	"os/exec"
	"os/signal"
	"syscall"
)

// ownGroup puts the child in its own process group, so that a Ctrl-C in
// the terminal reaches only ktlocal, which then stops the children in
// order; and has the kernel send the child SIGTERM should ktlocal die
// without stopping it.
func ownGroup(c *exec.Cmd) {
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}

// ignoreSIGPIPE keeps ktlocal alive when its output goes to a pipe that
// closes (`ktlocal | tee` and Ctrl-C), so that it still stops the
// daemons.
func ignoreSIGPIPE() { signal.Ignore(syscall.SIGPIPE) }
