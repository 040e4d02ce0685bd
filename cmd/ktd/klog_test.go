package main

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"k8s.io/klog/v2"
)

// TestTesseraStartupMessageQuiet: Tessera's "Failed to fetch old
// checkpoint: file does not exist" on a fresh log is DEBUG, not INFO;
// other klog messages keep their level.
func TestTesseraStartupMessageQuiet(t *testing.T) {
	for _, level := range []slog.Level{slog.LevelInfo, slog.LevelDebug} {
		var buf bytes.Buffer
		logger := slog.New(quietHandler{slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: level})})
		klog.SetSlogLogger(logger)
		klog.Info("Failed to fetch old checkpoint: file does not exist")
		klog.Info("Initializing directory for POSIX log")
		klog.Flush()
		out := buf.String()
		if strings.Contains(out, "level=INFO msg=\"Failed to fetch") {
			t.Errorf("level %v: the benign message at INFO:\n%s", level, out)
		}
		if got := strings.Contains(out, "level=DEBUG msg=\"Failed to fetch"); got != (level == slog.LevelDebug) {
			t.Errorf("level %v: benign message at DEBUG shown: %v\n%s", level, got, out)
		}
		if !strings.Contains(out, "level=INFO msg=\"Initializing directory") {
			t.Errorf("level %v: another message lost its level:\n%s", level, out)
		}
	}
	klog.ClearLogger()
}
