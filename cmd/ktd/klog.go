package main

import (
	"context"
	"log/slog"
	"strings"
)

// benignTessera are messages Tessera logs at INFO on a healthy start that
// read like errors: a fresh log has no checkpoint to fetch yet.
var benignTessera = []string{
	"Failed to fetch old checkpoint: file does not exist",
}

// quietHandler logs benignTessera messages at DEBUG instead of INFO; it
// wraps the handler Tessera and Trillian log through (klog).
type quietHandler struct{ slog.Handler }

func (h quietHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level == slog.LevelInfo {
		for _, m := range benignTessera {
			if strings.HasPrefix(r.Message, m) {
				if !h.Handler.Enabled(ctx, slog.LevelDebug) {
					return nil
				}
				r.Level = slog.LevelDebug
				break
			}
		}
	}
	return h.Handler.Handle(ctx, r)
}

func (h quietHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return quietHandler{h.Handler.WithAttrs(as)}
}

func (h quietHandler) WithGroup(name string) slog.Handler {
	return quietHandler{h.Handler.WithGroup(name)}
}
