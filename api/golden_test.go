package api

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

type goldenCase struct {
	name    string // file name under testdata/, without .golden
	comment string
	data    []byte
	// parse, if set, parses data; the result must equal want.
	parse func([]byte) (any, error)
	want  any
}

// goldenCases builds every pinned encoding from fixed inputs. Ed25519
// signatures are deterministic, so the bytes are too.
func goldenCases() []goldenCase {
	devA, privA := testDevice("a", false)
	devB, _ := testDevice("b", true)
	acctPriv, _ := testKey("account")
	recoveryPriv, _ := testKey("recovery")
	index := seeded32("vrf index alice")

	set1 := testSet(devA)
	set1.SignAccount(testOrigin, index, 1, acctPriv)
	rec1, opening1, value1 := testRecord(set1, 1, [32]byte{}, AuthEnroll, privA)
	entry1 := mustMarshal(rec1)

	set2 := testSet(devA, devB)
	rec2, _, value2 := testRecord(set2, 2, LeafHash(entry1), AuthDevice, privA)
	entry2 := mustMarshal(rec2)

	set3 := testSet()
	rec3, _, value3 := testRecord(set3, 3, LeafHash(entry2), AuthRecovery, recoveryPriv)
	entry3 := mustMarshal(rec3)

	// Format 0x02 (design.md 5.3): devices a and b with message-signing
	// keys and an account key signed for version 2; and an upgrading set,
	// where only device a has a message key yet.
	setV2 := testSetV2(devA, devB)
	setV2.SignAccount(testOrigin, index, 2, acctPriv)
	valueV2 := mustMarshal(setV2)
	setV2Partial := testSetV2(devA, devB)
	for i := range setV2Partial.Devices {
		if setV2Partial.Devices[i].ID == devB.ID {
			setV2Partial.Devices[i].MessageKey = [32]byte{}
		}
	}
	valuePartial := mustMarshal(setV2Partial)

	epoch := &EpochRecord{Epoch: 7, Timestamp: 1767225600123, LogSize: 42, MapRoot: seeded32("map root"), MapSize: 1000}

	parseChange := func(b []byte) (any, error) { return ParseChangeRecord(b) }
	parseSet := func(b []byte) (any, error) { return ParseDeviceSet(b) }
	commit := Commit(opening1, index, 1, value1)
	leaf := LeafHash(entry1)
	return append([]goldenCase{
		{"change-enroll", "change record, version 1, enroll, signed by device a; authorizers: device a, account key", entry1, parseChange, rec1},
		{"change-device", "change record, version 2, device (signed by device a); authorizers: devices a and b", entry2, parseChange, rec2},
		{"change-recovery", "change record, version 3, recovery (tombstone by the recovery key); no authorizers", entry3, parseChange, rec3},
		{"epoch", "epoch record: epoch 7, timestamp 1767225600123 ms, log size 42, map size 1000", mustMarshal(epoch), func(b []byte) (any, error) { return ParseEpochRecord(b) }, epoch},
		{"deviceset-strict", "device set: device a (X25519 suite), account key with its signature for version 1", value1, parseSet, set1},
		{"deviceset-two", "device set: devices a (X25519) and b (MLKEM768-X25519), no account key", value2, parseSet, set2},
		{"deviceset-tombstone", "device set with no devices (tombstone), no account key", value3, parseSet, set3},
		{"deviceset-v2", "device set format 0x02: devices a (X25519) and b (MLKEM768-X25519) with message-signing keys, account key with its signature for version 2", valueV2, parseSet, setV2},
		{"deviceset-v2-upgrading", "device set format 0x02: devices a and b, only b without a message-signing key (32 zero bytes), no account key", valuePartial, parseSet, setV2Partial},
		{"statement-account-v2", "AccountStatement(\"example.com/kt\", index, 2, deviceset-v2)", AccountStatement(testOrigin, index, 2, setV2), nil, nil},
		{"statement-change", "ChangeStatement(\"example.com/kt\", change-enroll)", ChangeStatement(testOrigin, rec1), nil, nil},
		{"statement-account", "AccountStatement(\"example.com/kt\", index, 1, deviceset-strict)", AccountStatement(testOrigin, index, 1, set1), nil, nil},
		{"statement-monitor", "MonitorStatement(\"example.com/kt\", index, known version 2, known size 42, timestamp 1767225600123 ms)", MonitorStatement(testOrigin, index, 2, 42, 1767225600123), nil, nil},
		{"commit", "Commit(opening 1, index, 1, deviceset-strict)", commit[:], nil, nil},
		{"leafhash", "LeafHash(change-enroll)", leaf[:], nil, nil},
		{"vrfinput", "VRFInput(\"mailto:alice@example.com\")", VRFInput("mailto:alice@example.com"), nil, nil},
	}, append(rotationGoldenCases(), moveGoldenCases()...)...)
}

// hexDump formats b as offset-prefixed lines of 16 bytes, so a format change
// shows up as a readable diff of the lines that moved.
func hexDump(comment string, b []byte) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "# %s\n# %d bytes. Regenerate: go test ./api -run TestGolden -update\n", comment, len(b))
	for off := 0; off < len(b); off += 16 {
		end := min(off+16, len(b))
		fmt.Fprintf(&sb, "%04x ", off)
		for _, c := range b[off:end] {
			fmt.Fprintf(&sb, " %02x", c)
		}
		sb.WriteByte('\n')
	}
	return sb.String()
}

func TestGolden(t *testing.T) {
	for _, c := range goldenCases() {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join("testdata", c.name+".golden")
			got := hexDump(c.comment, c.data)
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if diff := cmp.Diff(strings.Split(string(want), "\n"), strings.Split(got, "\n")); diff != "" {
				t.Errorf("encoding of %s changed (-golden +now); if intended, update docs/design.md and run with -update:\n%s", c.name, diff)
			}
			if c.parse != nil {
				parsed, err := c.parse(c.data)
				if err != nil {
					t.Fatalf("parsing the golden bytes: %v", err)
				}
				if diff := cmp.Diff(c.want, parsed); diff != "" {
					t.Errorf("parsed value differs (-want +got):\n%s", diff)
				}
			}
		})
	}
}
