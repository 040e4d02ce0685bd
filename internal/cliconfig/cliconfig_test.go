package cliconfig

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

type conf struct {
	A string        `mapstructure:"a"`
	B time.Duration `mapstructure:"b"`
	N struct {
		C []string `mapstructure:"c"`
		D bool     `mapstructure:"d_e"`
	} `mapstructure:"n"`
}

var opts = []Option{
	{Key: "a", Default: "default", Usage: "a"},
	{Key: "b", Default: time.Second, Usage: "b"},
	{Key: "n.c", Default: []string{"x"}, Usage: "c"},
	{Key: "n.d_e", Default: false, Usage: "d"},
}

func load(t *testing.T, file string, args ...string) (*conf, error) {
	t.Helper()
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	for _, o := range opts {
		AddFlag(fs, o, o.Usage)
	}
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	var c conf
	return &c, Load(fs, "KTTEST", opts, file, &c)
}

func TestPrecedence(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "c.yaml")
	if err := os.WriteFile(file, []byte("a: file\nb: 3s\nn:\n  c: [f1, f2]\n  d_e: true\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	c, err := load(t, "")
	if err != nil || c.A != "default" || c.B != time.Second || len(c.N.C) != 1 || c.N.D {
		t.Fatalf("defaults: %+v, %v", c, err)
	}
	c, err = load(t, file)
	if err != nil || c.A != "file" || c.B != 3*time.Second || len(c.N.C) != 2 || !c.N.D {
		t.Fatalf("file over defaults: %+v, %v", c, err)
	}
	t.Setenv(EnvName("KTTEST", "a"), "env")
	t.Setenv("KTTEST_N_D_E", "false")
	c, err = load(t, file)
	if err != nil || c.A != "env" || c.N.D || c.B != 3*time.Second {
		t.Fatalf("environment over file: %+v, %v", c, err)
	}
	c, err = load(t, file, "--a=flag", "--n-d-e")
	if err != nil || c.A != "flag" || !c.N.D {
		t.Fatalf("flags over environment: %+v, %v", c, err)
	}
}

func TestUnknownFileKey(t *testing.T) {
	file := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(file, []byte("a: x\ntypo: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := load(t, file); err == nil || !strings.Contains(err.Error(), "typo") {
		t.Fatalf("a file with an unknown key: got %v, want an error naming it", err)
	}
	if _, err := load(t, filepath.Join(t.TempDir(), "missing.yaml")); err == nil {
		t.Fatal("a missing configuration file was accepted")
	}
}

var testCommand = &Command{Name: "kttest", Prefix: "KTTEST", Options: opts, Usage: "kttest does nothing.\n\nFlags:\n", KeyInHelp: true}

func TestCommandParse(t *testing.T) {
	file := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(file, []byte("a: file\nb: 3s\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("KTTEST_B", "4s")
	var c conf
	validated := false
	rest, err := testCommand.Parse([]string{"--config", file, "--n-c", "y,z", "arg"}, io.Discard, &c, func() error { validated = true; return nil })
	if err != nil {
		t.Fatal(err)
	}
	if !validated || c.A != "file" || c.B != 4*time.Second || len(c.N.C) != 2 || c.N.D {
		t.Errorf("flag > env > file > default: got %+v (validated %v)", c, validated)
	}
	if len(rest) != 1 || rest[0] != "arg" {
		t.Errorf("positional arguments %q, want [arg]", rest)
	}

	// The validation's error is the configuration's.
	_, err = testCommand.Parse(nil, io.Discard, &c, func() error { return errors.New("a is wrong") })
	if err == nil || err.Error() != "configuration: a is wrong" {
		t.Errorf("validation error %v, want %q", err, "configuration: a is wrong")
	}
	// An unknown flag, an unknown key in the file.
	if _, err := testCommand.Parse([]string{"--typo"}, io.Discard, &c, nil); err == nil || !strings.Contains(err.Error(), "unknown flag") {
		t.Errorf("unknown flag: %v", err)
	}
	if err := os.WriteFile(file, []byte("typo: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := testCommand.Parse([]string{"--config", file}, io.Discard, &c, nil); err == nil || !strings.Contains(err.Error(), "typo") {
		t.Errorf("unknown key in the file: %v", err)
	}
	// NoArgs refuses positional arguments before reading the file.
	noArgs := *testCommand
	noArgs.NoArgs = true
	_, err = noArgs.Parse([]string{"--config", file, "extra"}, io.Discard, &c, nil)
	if err == nil || err.Error() != `unexpected arguments ["extra"] (see kttest --help)` {
		t.Errorf("NoArgs: %v", err)
	}
}

func TestCommandHelp(t *testing.T) {
	for _, tc := range []struct {
		keyInHelp bool
		want      string
	}{
		{true, "(n.d_e, KTTEST_N_D_E)"},
		{false, "(KTTEST_N_D_E)"},
	} {
		cmd := *testCommand
		cmd.KeyInHelp = tc.keyInHelp
		var out bytes.Buffer
		var c conf
		_, err := cmd.Parse([]string{"--help"}, &out, &c, nil)
		if !errors.Is(err, pflag.ErrHelp) {
			t.Fatalf("--help: %v", err)
		}
		help := out.String()
		if !strings.HasPrefix(help, "kttest does nothing.\n\nFlags:\n") || !strings.Contains(help, "--config") ||
			!strings.Contains(help, "--n-d-e") || !strings.Contains(help, tc.want) {
			t.Errorf("KeyInHelp %v: help\n%s\nwant the usage, then --config and --n-d-e with %q", tc.keyInHelp, help, tc.want)
		}
		if status, exit := Exit("kttest", err, io.Discard); !exit || status != 0 {
			t.Errorf("Exit after --help: %d, %v; want 0, true", status, exit)
		}
	}
}

func TestCommandFlagSetFilter(t *testing.T) {
	fs := testCommand.FlagSet(io.Discard, func(key string) bool { return key == "a" })
	if fs.Lookup("a") == nil || fs.Lookup("config") == nil || fs.Lookup("b") != nil {
		t.Fatal("FlagSet: want --config and --a only")
	}
	if err := fs.Parse([]string{"--a", "flag"}); err != nil {
		t.Fatal(err)
	}
	// Options without a flag still come from the environment.
	t.Setenv("KTTEST_B", "5s")
	var c conf
	if err := testCommand.Load(fs, &c); err != nil || c.A != "flag" || c.B != 5*time.Second {
		t.Errorf("Load: %+v, %v", c, err)
	}
}

func TestExit(t *testing.T) {
	if status, exit := Exit("kttest", nil, io.Discard); exit || status != 0 {
		t.Errorf("Exit(nil) = %d, %v; want 0, false", status, exit)
	}
	var out bytes.Buffer
	if status, exit := Exit("kttest", errors.New("configuration: bad"), &out); !exit || status != 2 {
		t.Errorf("Exit(error) = %d, %v; want 2, true", status, exit)
	}
	if out.String() != "kttest: configuration: bad\n" {
		t.Errorf("Exit printed %q", out.String())
	}
}

type validated struct {
	A string        `mapstructure:"a"`
	B time.Duration `mapstructure:"b"`
	N struct {
		C []string `mapstructure:"c"`
		D bool     `mapstructure:"d_e"`
	} `mapstructure:"n"`
}

// validate refuses an empty a and fills in a default that depends on it.
func (v *validated) validate() error {
	var p Problems
	if v.A == "" {
		p.Add("a must be set")
	}
	if v.B <= 0 {
		p.Add("b %v: want positive", v.B)
	}
	if len(v.N.C) == 0 {
		v.N.C = []string{v.A + "-c"}
	}
	return p.Err()
}

func TestParseConfig(t *testing.T) {
	c, rest, err := ParseConfig(testCommand, []string{"--a", "x", "--n-c=", "y"}, io.Discard, (*validated).validate)
	if err != nil {
		t.Fatal(err)
	}
	if c.A != "x" || c.B != time.Second || len(c.N.C) != 1 || c.N.C[0] != "x-c" || len(rest) != 1 || rest[0] != "y" {
		t.Errorf("ParseConfig: %+v, %q", c, rest)
	}
	// Every problem is reported, as the configuration's.
	_, _, err = ParseConfig(testCommand, []string{"--a=", "--b=0s"}, io.Discard, (*validated).validate)
	if err == nil || err.Error() != "configuration: a must be set\nb 0s: want positive" {
		t.Errorf("ParseConfig of a bad configuration: %v", err)
	}
	if _, _, err := ParseConfig[validated](testCommand, []string{"--a="}, io.Discard, nil); err != nil {
		t.Errorf("ParseConfig without validation: %v", err)
	}
	var none Problems
	if err := none.Err(); err != nil {
		t.Errorf("no problems: %v", err)
	}
}

func TestProblemsRequireHostPort(t *testing.T) {
	var p Problems
	p.Require("a", "")
	p.Require("b", "set")
	p.HostPort("c", "")
	p.HostPort("d", "127.0.0.1:1")
	p.HostPort("e", "8443")
	want := "a must be set\ne \"8443\": want host:port"
	if err := p.Err(); err == nil || err.Error() != want {
		t.Errorf("problems %v, want %q", err, want)
	}
}

func TestCount(t *testing.T) {
	for n, want := range map[int]string{0: "0 devices", 1: "1 device", 2: "2 devices"} {
		if got := Count(n, "device"); got != want {
			t.Errorf("Count(%d) = %q, want %q", n, got, want)
		}
	}
}
