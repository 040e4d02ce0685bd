package ktctl

import (
	"context"
	"fmt"
	"time"

	tpb "github.com/google/trillian"
	"github.com/google/trillian/types"

	ktrillian "github.com/keytrans/kt/log/trillian"
)

// Tree describes a Trillian tree and, for an initialised log, its latest
// root as Trillian reports it (unsigned by the key transparency log; the
// log's own checkpoints are what clients verify).
type Tree struct {
	ID              int64      `json:"id"`
	State           string     `json:"state"`
	Type            string     `json:"type"`
	DisplayName     string     `json:"display_name"`
	Description     string     `json:"description"`
	MaxRootDuration string     `json:"max_root_duration"`
	Created         *time.Time `json:"created,omitempty"`
	Updated         *time.Time `json:"updated,omitempty"`
	Deleted         bool       `json:"deleted"`
	// Size, RootHash and RootTime are from GetLatestSignedLogRoot; nil
	// when the tree has no root (not initialised).
	Size     *uint64    `json:"size,omitempty"`
	RootHash Hex        `json:"root_hash,omitempty"`
	RootTime *time.Time `json:"root_time,omitempty"`
	// RootError says why there is no root, when there is none.
	RootError string `json:"root_error,omitempty"`
}

// CreateTree creates and initialises a Trillian log tree for a key
// transparency log, as ktd's Trillian backend expects it
// (log/trillian.CreateTree), and returns its description.
func CreateTree(ctx context.Context, admin tpb.TrillianAdminClient, lc tpb.TrillianLogClient, displayName string) (*Tree, error) {
	id, err := ktrillian.CreateTree(ctx, admin, lc, displayName)
	if err != nil {
		return nil, err
	}
	return ShowTree(ctx, admin, lc, id)
}

// ShowTree describes the tree with the given ID.
func ShowTree(ctx context.Context, admin tpb.TrillianAdminClient, lc tpb.TrillianLogClient, id int64) (*Tree, error) {
	t, err := admin.GetTree(ctx, &tpb.GetTreeRequest{TreeId: id})
	if err != nil {
		return nil, fmt.Errorf("GetTree %d: %w", id, err)
	}
	out := describeTree(t)
	if t.TreeType != tpb.TreeType_LOG && t.TreeType != tpb.TreeType_PREORDERED_LOG {
		return out, nil
	}
	resp, err := lc.GetLatestSignedLogRoot(ctx, &tpb.GetLatestSignedLogRootRequest{LogId: id})
	if err != nil {
		out.RootError = err.Error()
		return out, nil
	}
	var root types.LogRootV1
	if err := root.UnmarshalBinary(resp.GetSignedLogRoot().GetLogRoot()); err != nil {
		out.RootError = fmt.Sprintf("undecodable log root: %v", err)
		return out, nil
	}
	rt := time.Unix(0, int64(min(root.TimestampNanos, 1<<63-1))).UTC()
	out.Size, out.RootHash, out.RootTime = &root.TreeSize, root.RootHash, &rt
	return out, nil
}

// ListTrees describes every tree the admin server knows, deleted ones
// included when showDeleted.
func ListTrees(ctx context.Context, admin tpb.TrillianAdminClient, showDeleted bool) ([]*Tree, error) {
	resp, err := admin.ListTrees(ctx, &tpb.ListTreesRequest{ShowDeleted: showDeleted})
	if err != nil {
		return nil, fmt.Errorf("ListTrees: %w", err)
	}
	out := []*Tree{}
	for _, t := range resp.GetTree() {
		out = append(out, describeTree(t))
	}
	return out, nil
}

func describeTree(t *tpb.Tree) *Tree {
	out := &Tree{
		ID: t.GetTreeId(), State: t.GetTreeState().String(), Type: t.GetTreeType().String(),
		DisplayName: t.GetDisplayName(), Description: t.GetDescription(), Deleted: t.GetDeleted(),
		MaxRootDuration: t.GetMaxRootDuration().AsDuration().String(),
	}
	if ts := t.GetCreateTime(); ts != nil {
		c := ts.AsTime().UTC()
		out.Created = &c
	}
	if ts := t.GetUpdateTime(); ts != nil {
		u := ts.AsTime().UTC()
		out.Updated = &u
	}
	return out
}
