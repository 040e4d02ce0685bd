package main

import (
	"context"
	"crypto/rand"
	"io"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/keytrans/kt/cmd/ktctl/internal/ktctl"
	"github.com/keytrans/kt/internal/testing/trilliantest"
	"github.com/keytrans/kt/log/trillian"
)

// TestTree administers trees of real Trillian binaries on MariaDB, and
// checks that the log backend accepts the tree ktctl creates.
func TestTree(t *testing.T) {
	env := trilliantest.Start(t, trilliantest.Options{SequencerInterval: 50 * time.Millisecond})
	addr := []string{"--trillian", env.Addr}

	var created ktctl.Tree
	r := runCLI(t, append([]string{"tree", "create", "--display-name", "ktctl-test", "--json"}, addr...)...)
	r.decode(t, &created)
	if r.code != exitOK || created.ID <= 0 || created.State != "ACTIVE" || created.Type != "LOG" || created.DisplayName != "ktctl-test" ||
		created.MaxRootDuration != "0s" || created.Size == nil || *created.Size != 0 {
		t.Fatalf("tree create: exit %d %+v\n%s", r.code, created, r.stderr)
	}
	id := strconv.FormatInt(created.ID, 10)

	// ktd's Trillian backend opens the tree and appends to it.
	skey, _, _ := note.GenerateKey(rand.Reader, "tree.test/kt")
	signer, _ := note.NewSigner(skey)
	ctx := context.Background()
	l, err := trillian.New(ctx, trillian.Config{
		Conn: env.Conn, TreeID: created.ID, Origin: "tree.test/kt", Signer: signer,
		CheckpointInterval: 20 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatalf("the backend refuses the tree: %v", err)
	}
	if _, err := l.Append(ctx, [][]byte{[]byte("one"), []byte("two")}); err != nil {
		t.Fatal(err)
	}
	l.Close(ctx)

	var shown ktctl.Tree
	r = runCLI(t, append([]string{"tree", "show", id, "--json"}, addr...)...)
	r.decode(t, &shown)
	if r.code != exitOK || shown.ID != created.ID || shown.Size == nil || *shown.Size != 2 || len(shown.RootHash) != 32 {
		t.Fatalf("tree show: exit %d %+v\n%s", r.code, shown, r.stderr)
	}
	runCLI(t, append([]string{"tree", "show", id}, addr...)...).want(t, exitOK,
		[]string{"tree ID            " + id, "state              ACTIVE", "type               LOG", "size               2", "root hash"})
	runCLI(t, append([]string{"tree", "list"}, addr...)...).want(t, exitOK, []string{"TREE ID", id, "ktctl-test"})
	var list []*ktctl.Tree
	r = runCLI(t, append([]string{"tree", "list", "--json"}, addr...)...)
	r.decode(t, &list)
	if len(list) != 1 || list[0].ID != created.ID {
		t.Errorf("tree list = %+v", list)
	}
	runCLI(t, append([]string{"tree", "show", "12345"}, addr...)...).want(t, exitIO, nil, "GetTree 12345", "NotFound")
}
