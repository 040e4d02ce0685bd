package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/client"
	"github.com/keytrans/kt/cmd/ktctl/internal/ktctl"
	"github.com/keytrans/kt/internal/cliconfig"
	"github.com/keytrans/kt/vrf"
)

var historyCmd = &command{
	name:  "history",
	args:  "--index HEX | --handle HANDLE",
	usage: "history (--index HEX | --handle HANDLE --data-dir DIR) [--recovery-key KEY] [log flags]",
	help: `Show every change record of a VRF index, checked as a chain.
Scans the whole log (recomputing the checkpoint's root from every entry),
collects the change records of the index, and checks versions, prev links
and authorizations (rules R1 to R6). --index takes the index (anyone);
--handle computes it with the directory's VRF private key (operators:
DATA_DIR/vrf.key or --vrf-key-file), or, with --vrf-public-key, learns it
from a lookup (--grpc) whose VRF proof it verifies. Exit status 1 if a
rule is broken, the VRF proof fails, or the entries do not match the
checkpoint.`,
	keys:    append([]string{"index", "handle", "vrf_key_file", "vrf_public_key", "grpc", "grpc_tls", "recovery_key", "full", "progress"}, logKeys...),
	network: true, maxArgs: 0,
	run: runHistory,
}

// indexArg resolves a VRF index from hex, or from a handle: with the VRF
// private key (operators), or by a lookup whose VRF proof is verified with
// the pinned VRF public key (anyone who knows the handle).
func (e *env) indexArg(ctx context.Context, index, handle string) ([32]byte, string, error) {
	switch {
	case index != "" && handle != "":
		return [32]byte{}, "", usageErr("give --index or --handle, not both")
	case index != "":
		i, err := ktctl.ParseIndex(index)
		return i, "", err
	case handle != "" && e.cfg.VRFPublicKey != "" && e.cfg.VRFKeyFile == "":
		pub, err := vrf.ParsePublicKey(strings.TrimSpace(e.cfg.VRFPublicKey))
		if err != nil {
			return [32]byte{}, "", usageErr("--vrf-public-key: %v", err)
		}
		conn, err := e.dial(e.cfg.GRPC, e.cfg.GRPCTLS)
		if err != nil {
			return [32]byte{}, "", err
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(ctx, e.cfg.Timeout)
		defer cancel()
		h, i, err := ktctl.LookupIndex(ctx, ktpb.NewDirectoryClient(conn), pub, handle)
		return i, h, err
	case handle != "":
		path := e.cfg.VRFKeyFile
		if path == "" {
			if e.cfg.DataDir == "" {
				return [32]byte{}, "", usageErr("--handle needs the VRF private key (--data-dir, ktd's data directory, or --vrf-key-file) or the VRF public key (--vrf-public-key, with --grpc)")
			}
			path = filepath.Join(e.cfg.DataDir, ktctl.VRFKeyFile)
		}
		k, err := ktctl.LoadVRFKey(path)
		if err != nil {
			return [32]byte{}, "", usageErr("%v", err)
		}
		h, i, err := ktctl.HandleIndex(k, handle)
		return i, h, err
	default:
		return [32]byte{}, "", usageErr("give --index HEX or --handle HANDLE")
	}
}

// progressBar draws "verb done/total (pct%)" on w, at most ten times a
// second, and finishes the line on done.
type progressBar struct {
	w    io.Writer
	verb string
	mu   sync.Mutex
	last time.Time
}

func (p *progressBar) update(done, total uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	if done < total && now.Sub(p.last) < 100*time.Millisecond {
		return
	}
	p.last = now
	pct := 100.0
	if total > 0 {
		pct = 100 * float64(done) / float64(total)
	}
	const width = 30
	n := int(pct / 100 * width)
	fmt.Fprintf(p.w, "\r%s [%s%s] %d/%d (%.1f%%)", p.verb, strings.Repeat("=", n), strings.Repeat(" ", width-n), done, total, pct)
	if done >= total {
		fmt.Fprintln(p.w)
	}
}

func (e *env) progressFunc(verb string) ktctl.Progress {
	if !e.progress {
		return nil
	}
	return (&progressBar{w: e.stderr, verb: verb}).update
}

func runHistory(ctx context.Context, e *env) error {
	index, handle, err := e.indexArg(ctx, e.cfg.Index, e.cfg.Handle)
	if err != nil {
		return err
	}
	cp, k, r, err := e.checkpoint(ctx)
	if err != nil {
		return err
	}
	res, err := ktctl.History(ctx, r, cp, k, index, e.progressFunc("scanning"))
	if res == nil {
		return err
	}
	res.Handle = handle
	if e.cfg.JSON {
		return e.printJSONThen(res, err)
	}
	kv := []string{"index", res.Index.String()}
	if handle != "" {
		kv = append(kv, "handle", handle)
	}
	kv = append(kv, "checkpoint", fmt.Sprintf("%s size %d (all entries scanned)", cp.Origin, cp.Size))
	fields(e.stdout, kv...)
	fmt.Fprintln(e.stdout)
	if len(res.Records) == 0 {
		fmt.Fprintln(e.stdout, "no change records for this index")
		return err
	}
	var rows [][]string
	for _, hr := range res.Records {
		ep := "pending"
		if hr.Epoch != nil {
			ep = strconv.FormatUint(*hr.Epoch, 10)
		}
		check := "ok"
		switch {
		case hr.Problem != "":
			check = "VIOLATION: " + hr.Problem
		case hr.R6Unchecked:
			check = "ok (R6 unchecked: no recovery key)"
		}
		rows = append(rows, []string{
			strconv.FormatUint(hr.Change.Version, 10), strconv.FormatUint(hr.LogIndex, 10), ep,
			hr.Change.Kind, e.short(hr.Change.Signer), strconv.Itoa(len(hr.Change.Authorizers)),
			e.short(hr.LeafHash), check,
		})
	}
	table(e.stdout, []string{"VERSION", "LOG INDEX", "EPOCH", "KIND", "SIGNER", "AUTHORIZERS", "LEAF HASH", "CHECK"}, rows)
	return err
}

var diffCmd = &command{
	name:  "diff",
	args:  "HANDLE_OR_INDEX EPOCH_A EPOCH_B",
	usage: "diff HANDLE_OR_INDEX EPOCH_A EPOCH_B [--operator ADDR] [--grpc ADDR] [--log-key KEY | --data-dir DIR] [--policy FILE]",
	help: `Show how a handle's device set differs between two epochs (operators).
Asks the directory's Operator service (--operator, ktd's operator_listen:
gRPC History, from version 0) for every version with its opening and
device set (the public Monitor serves those only to the handle's owner),
reads the log over gRPC (--grpc), verifies the answer (epoch checkpoint, map
proof, version chain, inclusion proofs, commitment openings), finds both
epochs in the log, and compares the versions current at each: devices
added, removed and re-keyed, account ID and account key changes, and the
changes in between. HANDLE_OR_INDEX is a VRF index (64 hexadecimal digits)
or a handle, which needs the VRF private key (--data-dir or
--vrf-key-file) or the VRF public key (--vrf-public-key: the index is then
learnt from a lookup whose VRF proof is verified). EPOCH_B may be "latest". Exit status 1 if the answer
does not verify.`,
	keys:    []string{"grpc", "grpc_tls", "operator", "log_key", "data_dir", "policy", "vrf_key_file", "vrf_public_key", "full"},
	network: true, minArgs: 3, maxArgs: 3,
	run: runDiff,
}

func isIndex(s string) bool {
	_, err := ktctl.ParseIndex(s)
	return err == nil
}

func runDiff(ctx context.Context, e *env) error {
	a, err := parseEpochArg("EPOCH_A", e.args[1])
	if err != nil {
		return err
	}
	b, err := parseEpochArg("EPOCH_B", e.args[2])
	if err != nil {
		return err
	}
	var index [32]byte
	var handle string
	if isIndex(e.args[0]) {
		index, _, err = e.indexArg(ctx, e.args[0], "")
	} else {
		index, handle, err = e.indexArg(ctx, "", e.args[0])
	}
	if err != nil {
		return err
	}
	k, err := e.keys()
	if err != nil {
		return err
	}
	conn, err := e.dial(e.cfg.GRPC, e.cfg.GRPCTLS)
	if err != nil {
		return err
	}
	defer conn.Close()
	oconn, err := e.dial(e.cfg.Operator, false)
	if err != nil {
		return err
	}
	defer oconn.Close()
	ctx, cancel := context.WithTimeout(ctx, e.cfg.Timeout)
	defer cancel()
	res, err := ktctl.Diff(ctx, ktpb.NewOperatorClient(oconn), client.LogReader{C: ktpb.NewLogClient(conn)}, k, index, a, b)
	if err != nil {
		return err
	}
	res.Handle = handle
	if e.cfg.JSON {
		return e.printJSON(res)
	}
	e.printDiff(res)
	return nil
}

func parseEpochArg(what, s string) (uint64, error) {
	if s == "latest" {
		return ktctl.LatestEpoch, nil
	}
	return parseUint(what, s)
}

func (e *env) printDiff(res *ktctl.DiffResult) {
	kv := []string{"index", res.Index.String()}
	if res.Handle != "" {
		kv = append(kv, "handle", res.Handle)
	}
	side := func(name string, s *ktctl.DiffSide) []string {
		v := "no version (not registered)"
		if s.Version > 0 {
			v = fmt.Sprintf("version %d, %s", s.Version, cliconfig.Count(len(s.DeviceSet.Devices), "device"))
		}
		return []string{name, fmt.Sprintf("epoch %d (%s, log size %d): %s", s.Epoch.Epoch, s.Epoch.Time.Format(time.RFC3339), s.Epoch.LogSize, v)}
	}
	kv = append(kv, side("A", res.A)...)
	kv = append(kv, side("B", res.B)...)
	acctID := "unchanged"
	if res.AccountIDChanged {
		acctID = "CHANGED"
	}
	kv = append(kv, "account ID", acctID, "account key", res.AccountKey,
		"verified under", fmt.Sprintf("epoch checkpoint of size %d", res.CheckpointSize))
	fields(e.stdout, kv...)
	fmt.Fprintln(e.stdout)
	var rows [][]string
	dev := func(change string, d ktctl.Device, note string) []string {
		return []string{change, e.short(d.ID), d.Suite, e.short(d.SigningKey), e.short(d.HPKEKey), note}
	}
	for _, d := range res.Added {
		rows = append(rows, dev("added", d, ""))
	}
	for _, d := range res.Removed {
		rows = append(rows, dev("removed", d, ""))
	}
	for _, r := range res.Rekeyed {
		rows = append(rows, dev("re-keyed", r.New, "was signing "+e.short(r.Old.SigningKey)+" hpke "+e.short(r.Old.HPKEKey)))
	}
	if len(rows) == 0 {
		fmt.Fprintf(e.stdout, "no device changes (%s unchanged)\n", cliconfig.Count(res.Unchanged, "device"))
	} else {
		table(e.stdout, []string{"CHANGE", "DEVICE ID", "SUITE", "SIGNING KEY", "HPKE KEY", "NOTE"}, rows)
		fmt.Fprintf(e.stdout, "%s unchanged\n", cliconfig.Count(res.Unchanged, "device"))
	}
	if len(res.Between) == 0 {
		return
	}
	fmt.Fprintln(e.stdout)
	rows = nil
	for _, c := range res.Between {
		note := ""
		if c.Change.Kind == "recovery" {
			note = "changed by the directory's recovery path, not by the owner"
		}
		rows = append(rows, []string{strconv.FormatUint(c.Change.Version, 10), strconv.FormatUint(c.LogIndex, 10),
			c.Change.Kind, e.short(c.Change.Signer), strconv.Itoa(len(c.DeviceSet.Devices)), note})
	}
	table(e.stdout, []string{"VERSION", "LOG INDEX", "KIND", "SIGNER", "DEVICES", "NOTE"}, rows)
}
