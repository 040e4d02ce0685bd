package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spf13/pflag"
)

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConfigDefaults(t *testing.T) {
	c, rest, err := loadConfig(nil, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if len(rest) != 0 {
		t.Errorf("rest = %q", rest)
	}
	want := &Config{
		DataDir:        "./data",
		HTTPListen:     "127.0.0.1:8080",
		GRPCListen:     "127.0.0.1:8443",
		OperatorListen: "127.0.0.1:8444",
		MetricsListen:  "127.0.0.1:9464",
		Limits:         LimitsConfig{MaxRequestBytes: 256 << 10, RequestsPerSecond: 50, Burst: 100, MaxPeers: 65536, MaxConnsPerPeer: 32, RecvTimeout: 10 * time.Second},
		Directory: DirectoryConfig{
			EpochInterval:     time.Second,
			HeartbeatInterval: 10 * time.Second,
			VRFKeyFile:        "data/vrf.key",
			RecoveryKeyFile:   "data/recovery.key",
			CacheSize:         256 << 20,
		},
		Enrollment: EnrollmentConfig{Mode: "token", TokenKeyFile: "data/enroll-token.key", TokenTTL: 15 * time.Minute},
		Log: LogConfig{
			Origin:             "localhost/kt",
			Backend:            "posix",
			KeyFile:            "data/log.key",
			CheckpointInterval: 100 * time.Millisecond,
		},
		Witness: WitnessConfig{Timeout: 10 * time.Second},
		Cluster: ClusterConfig{LeaseDuration: 10 * time.Second, Margin: 2 * time.Second, PollInterval: 250 * time.Millisecond},
	}
	if diff := cmp.Diff(want, c); diff != "" {
		t.Errorf("defaults (-want +got):\n%s", diff)
	}
}

func TestConfigCluster(t *testing.T) {
	c, _, err := loadConfig([]string{"--log-backend", "trillian", "--log-trillian-address", "a:1, b:2", "--log-trillian-tree-id", "7",
		"--cluster-dsn", "kt:pw@tcp(db:3306)/kt", "--cluster-advertise", "kt-1:8443"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	want := ClusterConfig{DSN: "kt:pw@tcp(db:3306)/kt", TrillianDSN: "kt:pw@tcp(db:3306)/kt", LeaseName: "directory-writer/localhost/kt",
		LeaseDuration: 10 * time.Second, Margin: 2 * time.Second, Advertise: "kt-1:8443", PollInterval: 250 * time.Millisecond}
	if diff := cmp.Diff(want, c.Cluster); diff != "" {
		t.Errorf("cluster (-want +got):\n%s", diff)
	}
	if got := trillianAddrs(c.Log.Trillian.Address); !cmp.Equal(got, []string{"a:1", "b:2"}) {
		t.Errorf("trillian addresses %q", got)
	}
}

func TestConfigPrecedence(t *testing.T) {
	file := writeFile(t, "ktd.yaml", `
data_dir: /from/file
grpc_listen: 127.0.0.1:1001
http_listen: 127.0.0.1:1002
log:
  origin: file.example/kt
  checkpoint_interval: 1s
directory:
  epoch_interval: 2s
  heartbeat_interval: 20s
limits:
  burst: 7
`)
	t.Setenv("KTD_GRPC_LISTEN", "127.0.0.1:2001")
	t.Setenv("KTD_LOG_ORIGIN", "env.example/kt")
	t.Setenv("KTD_DIRECTORY_HEARTBEAT_INTERVAL", "30s")
	c, _, err := loadConfig([]string{"--config", file, "--log-origin", "flag.example/kt", "--limits-requests-per-second", "2.5"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name      string
		got, want any
	}{
		{"file only", c.HTTPListen, "127.0.0.1:1002"},
		{"file only, nested", c.Log.CheckpointInterval, time.Second},
		{"file only, int", c.Limits.Burst, 7},
		{"file only, path default follows data_dir", c.Directory.VRFKeyFile, "/from/file/vrf.key"},
		{"env over file", c.GRPCListen, "127.0.0.1:2001"},
		{"env over file, nested duration", c.Directory.HeartbeatInterval, 30 * time.Second},
		{"flag over env and file", c.Log.Origin, "flag.example/kt"},
		{"flag over default, float", c.Limits.RequestsPerSecond, 2.5},
		{"default", c.OperatorListen, "127.0.0.1:8444"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.got != tc.want {
				t.Errorf("got %v, want %v", tc.got, tc.want)
			}
		})
	}
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		file string // YAML, optional
		env  map[string]string
		args []string
		want string // substring of the error
	}{
		{name: "unknown top-level key in file", file: "grpc_lsten: 127.0.0.1:1\n", want: "grpc_lsten"},
		{name: "unknown nested key in file", file: "log:\n  orign: x\n", want: "orign"},
		{name: "bad duration in file", file: "directory:\n  epoch_interval: soon\n", want: "epoch_interval"},
		{name: "bad duration in env", env: map[string]string{"KTD_LOG_CHECKPOINT_INTERVAL": "abc"}, want: "checkpoint_interval"},
		{name: "bad int in env", env: map[string]string{"KTD_LIMITS_BURST": "many"}, want: "burst"},
		{name: "bad flag value", args: []string{"--limits-burst", "many"}, want: "limits-burst"},
		{name: "unknown flag", args: []string{"--no-such-flag"}, want: "no-such-flag"},
		{name: "backend", args: []string{"--log-backend", "sqlite"}, want: `log.backend "sqlite"`},
		{name: "trillian without address", args: []string{"--log-backend", "trillian", "--log-trillian-tree-id", "5"}, want: "log.trillian.address"},
		{name: "enrollment mode", args: []string{"--enrollment-mode", "closed"}, want: "enrollment.mode"},
		{name: "heartbeat below epoch", args: []string{"--directory-epoch-interval", "5s", "--directory-heartbeat-interval", "1s"}, want: "heartbeat_interval"},
		{name: "origin with a space", args: []string{"--log-origin", "a b"}, want: "log.origin"},
		{name: "listen address", args: []string{"--grpc-listen", "8443"}, want: "grpc_listen"},
		{name: "tls cert without key", args: []string{"--tls-cert-file", "c.pem"}, want: "tls.key_file"},
		{name: "public operator without client CA", args: []string{"--operator-listen", "0.0.0.0:8444"}, want: "operator.client_ca_file"},
		{name: "zero rate", args: []string{"--limits-requests-per-second", "0"}, want: "requests_per_second"},
		{name: "tiny messages", args: []string{"--limits-max-request-bytes", "10"}, want: "max_request_bytes"},
		{name: "cluster on posix", args: []string{"--cluster-dsn", "u@tcp(db:3306)/kt"}, want: `needs log.backend "trillian"`},
		{name: "cluster creating a tree", args: []string{"--log-backend", "trillian", "--log-trillian-address", "t:1", "--log-trillian-create-tree", "--cluster-dsn", "u@tcp(db:3306)/kt"}, want: "fixed log.trillian.tree_id"},
		{name: "cluster bad dsn", args: []string{"--log-backend", "trillian", "--log-trillian-address", "t:1", "--log-trillian-tree-id", "5", "--cluster-dsn", "u@tcp(db:3306"}, want: "cluster.dsn"},
		{name: "cluster margin", args: []string{"--log-backend", "trillian", "--log-trillian-address", "t:1", "--log-trillian-tree-id", "5", "--cluster-dsn", "u@tcp(db:3306)/kt", "--cluster-margin", "20s"}, want: "cluster.margin"},
		{name: "cluster keys without dsn", args: []string{"--cluster-advertise", "kt-1:8443"}, want: "need cluster.dsn"},
		{name: "trillian address list", args: []string{"--log-backend", "trillian", "--log-trillian-tree-id", "5", "--log-trillian-address", "a:1,b"}, want: `log.trillian.address "b"`},
		{name: "missing config file", args: []string{"--config", "/nonexistent/ktd.yaml"}, want: "configuration file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := tc.args
			if tc.file != "" {
				args = append([]string{"--config", writeFile(t, "ktd.yaml", tc.file)}, args...)
			}
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			_, _, err := loadConfig(args, &bytes.Buffer{})
			if err == nil {
				t.Fatal("loadConfig succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
		})
	}
}

func TestConfigAcceptsSecureOperator(t *testing.T) {
	_, _, err := loadConfig([]string{"--operator-listen", "0.0.0.0:8444", "--operator-client-ca-file", "ca.pem", "--tls-cert-file", "c.pem", "--tls-key-file", "k.pem"}, &bytes.Buffer{})
	if err != nil {
		t.Fatalf("public operator listener with mutual TLS refused: %v", err)
	}
}

func TestConfigHelpAndArgs(t *testing.T) {
	var out bytes.Buffer
	_, _, err := loadConfig([]string{"--help"}, &out)
	if !errors.Is(err, pflag.ErrHelp) {
		t.Fatalf("--help: %v", err)
	}
	for _, s := range []string{"issue-token", "--grpc-listen", "KTD_GRPC_LISTEN", "directory.vrf_key_file", "INSECURE"} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("help does not mention %q", s)
		}
	}
	_, rest, err := loadConfig([]string{"--data-dir", "/d", "tel:+15551234567"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if len(rest) != 1 || rest[0] != "tel:+15551234567" {
		t.Errorf("rest = %q", rest)
	}
}
