package testkit

import (
	"bufio"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Daemon is a program a test started with [Launch].
type Daemon struct {
	Cmd    *exec.Cmd
	Logs   *SyncBuffer // its standard error
	Exited chan error  // receives Wait's result once; a reader that only peeks puts it back
	Start  time.Time   // when it was started
	Ready  time.Time   // when its ready line was seen
	Line   string      // the ready line
}

// Launch starts bin with args and returns once a line of its standard
// error contains ready (ok true; the line is in d.Line), or once it exits
// (ok false, with its exit error in err). It fails the test if neither
// happens within a minute. At cleanup the program is killed if still
// running, and its standard error is logged if the test failed.
func Launch(t testing.TB, bin string, args []string, ready string) (d *Daemon, ok bool, err error) {
	t.Helper()
	return LaunchCmd(t, exec.Command(bin, args...), ready)
}

// LaunchCmd is [Launch] of a prepared command (its environment, directory
// and so on set; its standard error must not be).
func LaunchCmd(t testing.TB, cmd *exec.Cmd, ready string) (d *Daemon, ok bool, err error) {
	t.Helper()
	bin := cmd.Path
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	d = &Daemon{Cmd: cmd, Logs: &SyncBuffer{}, Exited: make(chan error, 1), Start: time.Now()}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", bin, err)
	}
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			l := sc.Text()
			fmt.Fprintln(d.Logs, l)
			if strings.Contains(l, ready) {
				select {
				case lines <- l:
				default:
				}
			}
		}
		io.Copy(d.Logs, stderr)
		d.Exited <- cmd.Wait()
	}()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-d.Exited
		}
		if t.Failed() {
			t.Logf("%s logs:\n%s", bin, d.Logs)
		}
	})
	select {
	case d.Line = <-lines:
		d.Ready = time.Now()
		return d, true, nil
	case err := <-d.Exited:
		d.Exited <- err
		return d, false, err
	case <-time.After(2 * time.Minute):
		t.Fatalf("%s neither became ready nor exited within 2 minutes\n%s", bin, d.Logs)
	}
	return nil, false, nil
}

// Stop sends SIGTERM, as an init system would, and fails the test unless
// the program exits cleanly within a minute.
func (d *Daemon) Stop(t testing.TB) {
	t.Helper()
	if err := d.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}
	select {
	case err := <-d.Exited:
		if err != nil {
			t.Fatalf("exited with %v after SIGTERM\n%s", err, d.Logs)
		}
	case <-time.After(time.Minute):
		t.Fatalf("did not stop within a minute of SIGTERM\n%s", d.Logs)
	}
}
