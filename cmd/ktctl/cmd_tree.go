package main

import (
	"context"
	"fmt"
	"strconv"
	"time"

	tpb "github.com/google/trillian"

	"github.com/keytrans/kt/cmd/ktctl/internal/ktctl"
)

var treeCreateCmd = &command{
	name:  "tree create",
	args:  "",
	usage: "tree create [--trillian ADDR] [--display-name NAME]",
	help: `Create and initialise a Trillian log tree for ktd's Trillian backend.
Prints the new tree; put its ID in ktd's log.trillian.tree_id.`,
	keys: []string{"trillian", "display_name"}, network: true, maxArgs: 0,
	run: runTreeCreate,
}

var treeShowCmd = &command{
	name:  "tree show",
	args:  "TREE_ID",
	usage: "tree show TREE_ID [--trillian ADDR]",
	help: `Show a Trillian tree and its latest root.
State, type, times, and the latest root as Trillian reports it (size, root
hash, time; unsigned: ktd's own checkpoints are what clients verify).`,
	keys: []string{"trillian"}, network: true, minArgs: 1, maxArgs: 1,
	run: runTreeShow,
}

var treeListCmd = &command{
	name:  "tree list",
	args:  "",
	usage: "tree list [--trillian ADDR] [--show-deleted]",
	help:  `List the trees of a Trillian admin server.`,
	keys:  []string{"trillian", "show_deleted"}, network: true, maxArgs: 0,
	run: runTreeList,
}

func (e *env) trillian(ctx context.Context) (tpb.TrillianAdminClient, tpb.TrillianLogClient, func(), context.Context, error) {
	conn, err := e.dial(e.cfg.Trillian, false)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, e.cfg.Timeout)
	return tpb.NewTrillianAdminClient(conn), tpb.NewTrillianLogClient(conn), func() { cancel(); conn.Close() }, ctx, nil
}

func runTreeCreate(ctx context.Context, e *env) error {
	admin, lc, done, ctx, err := e.trillian(ctx)
	if err != nil {
		return err
	}
	defer done()
	t, err := ktctl.CreateTree(ctx, admin, lc, e.cfg.DisplayName)
	if err != nil {
		return err
	}
	return e.printTree(t)
}

func runTreeShow(ctx context.Context, e *env) error {
	id, err := strconv.ParseInt(e.args[0], 10, 64)
	if err != nil || id <= 0 {
		return usageErr("TREE_ID %q: want a positive decimal integer", e.args[0])
	}
	admin, lc, done, ctx, err := e.trillian(ctx)
	if err != nil {
		return err
	}
	defer done()
	t, err := ktctl.ShowTree(ctx, admin, lc, id)
	if err != nil {
		return err
	}
	return e.printTree(t)
}

func runTreeList(ctx context.Context, e *env) error {
	admin, _, done, ctx, err := e.trillian(ctx)
	if err != nil {
		return err
	}
	defer done()
	ts, err := ktctl.ListTrees(ctx, admin, e.cfg.ShowDeleted)
	if err != nil {
		return err
	}
	if e.cfg.JSON {
		return e.printJSON(ts)
	}
	if len(ts) == 0 {
		fmt.Fprintln(e.stdout, "no trees")
		return nil
	}
	var rows [][]string
	for _, t := range ts {
		rows = append(rows, []string{strconv.FormatInt(t.ID, 10), t.State, t.Type, t.DisplayName, fmtTime(t.Created), strconv.FormatBool(t.Deleted)})
	}
	table(e.stdout, []string{"TREE ID", "STATE", "TYPE", "DISPLAY NAME", "CREATED", "DELETED"}, rows)
	return nil
}

func fmtTime(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return t.Format(time.RFC3339)
}

func (e *env) printTree(t *ktctl.Tree) error {
	if e.cfg.JSON {
		return e.printJSON(t)
	}
	kv := []string{
		"tree ID", strconv.FormatInt(t.ID, 10),
		"state", t.State,
		"type", t.Type,
		"display name", t.DisplayName,
		"description", t.Description,
		"max root duration", t.MaxRootDuration,
		"created", fmtTime(t.Created),
		"updated", fmtTime(t.Updated),
		"deleted", strconv.FormatBool(t.Deleted),
	}
	if t.Size != nil {
		kv = append(kv, "size", strconv.FormatUint(*t.Size, 10), "root hash", t.RootHash.String(), "root time", fmtTime(t.RootTime))
	} else if t.RootError != "" {
		kv = append(kv, "root", "none: "+t.RootError)
	}
	fields(e.stdout, kv...)
	return nil
}
