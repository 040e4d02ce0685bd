package cliconfig

import (
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
