//go:build unix && !linux

package main

import (
	"os/exec"
	"os/signal"
	"syscall"
)

// ownGroup puts the child in its own process group, so that a Ctrl-C in
// the terminal reaches only ktlocal, which then stops the children in
// order.
func ownGroup(c *exec.Cmd) { c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} }

// ignoreSIGPIPE keeps ktlocal alive when its output pipe closes, so that
// it still stops the daemons.
func ignoreSIGPIPE() { signal.Ignore(syscall.SIGPIPE) }
