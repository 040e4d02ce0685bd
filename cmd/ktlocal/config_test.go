package main

import (
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

func TestLoadConfig(t *testing.T) {
	c, err := loadConfig(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.DataDir != "./data" || c.GRPCListen != "127.0.0.1:8443" || c.HTTPListen != "127.0.0.1:8080" ||
		c.OperatorListen != "127.0.0.1:8444" || strings.Join(c.AuditorListen, ",") != "127.0.0.1:8481,127.0.0.1:8482" ||
		c.EpochInterval != time.Second || c.HeartbeatInterval != 10*time.Second || c.Source != "." || c.BinDir != "" || !c.Audit {
		t.Errorf("defaults: %+v", c)
	}
	t.Setenv("KTLOCAL_DATA_DIR", "/tmp/x")
	if c, err := loadConfig([]string{"--grpc-listen", "127.0.0.1:9443"}, io.Discard); err != nil || c.DataDir != "/tmp/x" || c.GRPCListen != "127.0.0.1:9443" {
		t.Errorf("environment and flag: %+v, %v", c, err)
	}
	if _, err := loadConfig([]string{"--help"}, io.Discard); !errors.Is(err, pflag.ErrHelp) {
		t.Errorf("--help: %v", err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--data-dir="}, "data_dir must be set"},
		{[]string{"--bin-dir=", "--source="}, "set bin_dir or source"},
		{[]string{"--auditor-listen", "127.0.0.1:1"}, "want exactly two addresses"},
		{[]string{"--grpc-listen", "8443"}, "want host:port"},
		{[]string{"--http-listen", "0.0.0.0:8080"}, "loopback only"},
		{[]string{"--auditor-listen", "127.0.0.1:1,192.0.2.1:2"}, "loopback only"},
		{[]string{"--epoch-interval", "0s"}, "epoch_interval"},
		{[]string{"--heartbeat-interval", "100ms"}, "heartbeat_interval"},
		{[]string{"--gossip-interval", "-1s"}, "gossip_interval"},
		{[]string{"--no-such-flag"}, "unknown flag"},
		{[]string{"extra"}, "unexpected arguments"},
	} {
		if _, err := loadConfig(tc.args, io.Discard); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want %q", tc.args, err, tc.want)
		}
	}
}

// TestNextFlags: on non-default ports, the printed next commands carry the
// flags kt and ktctl need; on the defaults, none.
func TestNextFlags(t *testing.T) {
	cfg := &Config{GRPCListen: defaultGRPC, HTTPListen: defaultHTTP}
	if kt, ktctl := nextFlags(cfg); kt != "" || ktctl != "" {
		t.Errorf("defaults: %q, %q", kt, ktctl)
	}
	cfg = &Config{GRPCListen: "127.0.0.1:9443", HTTPListen: "127.0.0.1:9080"}
	kt, ktctl := nextFlags(cfg)
	if kt != " --directory 127.0.0.1:9443" || ktctl != " --log-url http://127.0.0.1:9080" {
		t.Errorf("other ports: %q, %q", kt, ktctl)
	}
	// The defaults are ktlocal's own and kt's and ktctl's.
	for _, o := range options {
		if o.Key == "grpc_listen" && o.Default != defaultGRPC || o.Key == "http_listen" && o.Default != defaultHTTP {
			t.Errorf("ktlocal's %s default %v is not %s/%s", o.Key, o.Default, defaultGRPC, defaultHTTP)
		}
	}
}
