package trilliantest

import (
	"context"
	"database/sql"
	"slices"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
)

// TestNewDatabase checks that the database gets Trillian's schema, is
// usable with the returned DSN, and is dropped when the test ends.
func TestNewDatabase(t *testing.T) {
	var name string
	t.Run("create", func(t *testing.T) {
		dsn := NewDatabase(t)
		cfg, err := mysql.ParseDSN(dsn)
		if err != nil {
			t.Fatal(err)
		}
		name = cfg.DBName
		db, err := sql.Open("mysql", dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		for _, table := range []string{"Trees", "LeafData", "SequencedLeafData", "Unsequenced", "TreeHead", "Subtree"} {
			var n int
			if err := db.QueryRow("SELECT COUNT(*) FROM " + table).Scan(&n); err != nil {
				t.Errorf("table %s: %v", table, err)
			}
		}
	})
	if name == "" {
		return // skipped: no MariaDB
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	admin, _, _, ok, reason, err := connect(ctx)
	if err != nil || !ok {
		t.Fatalf("reconnecting: %v %s", err, reason)
	}
	defer admin.Close()
	var found string
	err = admin.QueryRowContext(ctx, "SHOW DATABASES LIKE '"+name+"'").Scan(&found)
	if err != sql.ErrNoRows {
		t.Fatalf("database %s still exists after the test (%q, %v)", name, found, err)
	}
}

// TestOptionsFlags checks that the defaults and explicit options reach the
// binaries' flags.
func TestOptionsFlags(t *testing.T) {
	for _, tc := range []struct {
		name           string
		opts           Options
		server, signer []string
	}{
		{
			name:   "defaults",
			server: []string{"--mysql_max_conns=64", "--mysql_max_idle_conns=32"},
			signer: []string{"--sequencer_interval=20ms", "--batch_size=1000", "--num_sequencers=1"},
		},
		{
			name: "explicit",
			opts: Options{
				SequencerInterval: 150 * time.Millisecond, BatchSize: 7, NumSequencers: 3,
				MaxConns: 9, MaxIdleConns: 5, QuotaSystem: "noop",
			},
			server: []string{"--mysql_max_conns=9", "--mysql_max_idle_conns=5"},
			signer: []string{"--sequencer_interval=150ms", "--batch_size=7", "--num_sequencers=3"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := tc.opts.withDefaults()
			if got := o.serverFlags(); !slices.Equal(got, tc.server) {
				t.Errorf("server flags %q, want %q", got, tc.server)
			}
			if got := o.signerFlags(); !slices.Equal(got, tc.signer) {
				t.Errorf("signer flags %q, want %q", got, tc.signer)
			}
			if want := tc.opts.QuotaSystem; want != "" && o.QuotaSystem != want {
				t.Errorf("quota system %q, want %q", o.QuotaSystem, want)
			}
		})
	}
}
