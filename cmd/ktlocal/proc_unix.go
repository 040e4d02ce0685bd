//go:build unix

package main

import (
	"os/exec"
	"syscall"
)

// ownGroup puts the child in its own process group, so that a Ctrl-C in
// the terminal reaches only ktlocal, which then stops the children in
// order.
func ownGroup(c *exec.Cmd) { c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} }
