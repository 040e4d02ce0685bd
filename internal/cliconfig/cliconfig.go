// Package cliconfig is the one configuration loader of the binaries in
// cmd/: each key of a binary's option table is a flag, an environment
// variable (PREFIX_ + the key upper-cased, dots as underscores) and a key of
// the file given by --config (YAML, TOML or JSON, nested at the dots).
// Flags override the environment, which overrides the file, which
// overrides the defaults. Each binary keeps its own option table, usage
// text and validation; this package only does the loading, so the
// precedence rules cannot drift apart between binaries.
package cliconfig

import (
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"github.com/spf13/viper"
)

// Option is one configuration key with its default and help. The type of
// Default is the flag's type: string, bool, int, int64, uint64, float64,
// time.Duration or []string.
type Option struct {
	Key     string
	Default any
	Usage   string
}

// FlagName is the flag of key: dots and underscores become hyphens.
func FlagName(key string) string {
	return strings.NewReplacer(".", "-", "_", "-").Replace(key)
}

// EnvName is the environment variable of key for a binary whose variables
// start with prefix (for example "KTD").
func EnvName(prefix, key string) string {
	return prefix + "_" + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

// AddFlag defines o's flag in fs with the given help text. It panics on a
// default of an unsupported type: the option tables are constants.
func AddFlag(fs *pflag.FlagSet, o Option, usage string) {
	name := FlagName(o.Key)
	switch d := o.Default.(type) {
	case string:
		fs.String(name, d, usage)
	case bool:
		fs.Bool(name, d, usage)
	case int:
		fs.Int(name, d, usage)
	case int64:
		fs.Int64(name, d, usage)
	case uint64:
		fs.Uint64(name, d, usage)
	case float64:
		fs.Float64(name, d, usage)
	case time.Duration:
		fs.Duration(name, d, usage)
	case []string:
		fs.StringSlice(name, d, usage)
	default:
		panic(fmt.Sprintf("option %s: unsupported default type %T", o.Key, d))
	}
}

// Load fills out (a pointer to a struct with mapstructure tags) from the
// defaults of opts, the file configFile (if not empty), the environment and
// the flags of fs that were defined for opts (options without a flag in fs
// come from the other sources only). Unknown keys in the file are an error.
func Load(fs *pflag.FlagSet, prefix string, opts []Option, configFile string, out any) error {
	v := viper.New()
	for _, o := range opts {
		v.SetDefault(o.Key, o.Default)
		if f := fs.Lookup(FlagName(o.Key)); f != nil {
			if err := v.BindPFlag(o.Key, f); err != nil {
				return err
			}
		}
		if err := v.BindEnv(o.Key, EnvName(prefix, o.Key)); err != nil {
			return err
		}
	}
	if configFile != "" {
		v.SetConfigFile(configFile)
		if err := v.ReadInConfig(); err != nil {
			return fmt.Errorf("reading configuration file: %w", err)
		}
	}
	if err := v.UnmarshalExact(out); err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	return nil
}

// Command is one binary's configuration table: what its loadConfig needs
// to define its flags and read its file and environment. The binary keeps
// its own Config struct, option table, usage text and validation.
type Command struct {
	// Name is the binary's name (the flag set's, and "see NAME --help").
	Name string
	// Prefix starts the binary's environment variables (for example "KTD").
	Prefix string
	// Options is the binary's option table.
	Options []Option
	// Usage is printed before the flags' help by --help. Empty: pflag's
	// default.
	Usage string
	// KeyInHelp names each flag's key as well as its environment variable
	// in its help: "(log.origin, KTD_LOG_ORIGIN)" instead of
	// "(KTD_LOG_ORIGIN)".
	KeyInHelp bool
	// NoArgs refuses positional arguments, before the configuration is
	// loaded.
	NoArgs bool
}

// configFlag is the flag naming the configuration file.
const configFlag = "config"

// FlagSet returns a flag set that writes its errors and help to out and
// defines --config, then the flag of each option of c for which flag(key)
// is true (every option when flag is nil), in table order. The caller may
// add its own flags before parsing; [Command.Load] reads the result.
func (c *Command) FlagSet(out io.Writer, flag func(key string) bool) *pflag.FlagSet {
	fs := pflag.NewFlagSet(c.Name, pflag.ContinueOnError)
	fs.SetOutput(out)
	fs.SortFlags = false
	if c.Usage != "" {
		fs.Usage = func() {
			fmt.Fprint(out, c.Usage)
			fmt.Fprint(out, fs.FlagUsages())
		}
	}
	fs.String(configFlag, "", "configuration file (YAML, TOML or JSON)")
	for _, o := range c.Options {
		if flag != nil && !flag(o.Key) {
			continue
		}
		AddFlag(fs, o, c.help(o))
	}
	return fs
}

// help is the help text of o's flag: its usage and where else it is set.
func (c *Command) help(o Option) string {
	if c.KeyInHelp {
		return fmt.Sprintf("%s (%s, %s)", o.Usage, o.Key, EnvName(c.Prefix, o.Key))
	}
	return fmt.Sprintf("%s (%s)", o.Usage, EnvName(c.Prefix, o.Key))
}

// Load fills out from the defaults of c's options, the file named by fs's
// --config, the environment and the flags of fs (parsed), as the package
// Load does.
func (c *Command) Load(fs *pflag.FlagSet, out any) error {
	file := ""
	if f := fs.Lookup(configFlag); f != nil {
		file = f.Value.String()
	}
	return Load(fs, c.Prefix, c.Options, file, out)
}

// Parse parses args with c's flag set (every option; output and help to
// out), loads the configuration into out, and validates it with validate
// (if not nil), whose error is returned as "configuration: ...". It
// returns the positional arguments. When help was asked for, it prints the
// usage to out and returns pflag.ErrHelp.
func (c *Command) Parse(args []string, w io.Writer, out any, validate func() error) ([]string, error) {
	fs := c.FlagSet(w, nil)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if c.NoArgs && fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q (see %s --help)", fs.Args(), c.Name)
	}
	if err := c.Load(fs, out); err != nil {
		return nil, err
	}
	if validate != nil {
		if err := validate(); err != nil {
			return nil, fmt.Errorf("configuration: %w", err)
		}
	}
	return fs.Args(), nil
}

// Exit maps the error of a binary's loadConfig to its exit status: after
// --help (pflag.ErrHelp) 0; after another error, printed to w as
// "NAME: error", 2 (a usage error). exit is false when err is nil and the
// binary goes on.
func Exit(name string, err error, w io.Writer) (status int, exit bool) {
	switch {
	case err == nil:
		return 0, false
	case errors.Is(err, pflag.ErrHelp):
		return 0, true
	default:
		fmt.Fprintf(w, "%s: %v\n", name, err)
		return 2, true
	}
}

// ParseConfig is [Command.Parse] into a new T validated by validate (a
// method expression such as (*Config).validate; nil: none).
func ParseConfig[T any](c *Command, args []string, w io.Writer, validate func(*T) error) (*T, []string, error) {
	cfg := new(T)
	var v func() error
	if validate != nil {
		v = func() error { return validate(cfg) }
	}
	rest, err := c.Parse(args, w, cfg, v)
	if err != nil {
		return nil, nil, err
	}
	return cfg, rest, nil
}

// SourcesHelp is the paragraph of a binary's usage text that says where
// each key is set, for a Command with KeyInHelp.
const SourcesHelp = `Every flag is also a configuration key: in the file given by --config
(YAML, TOML or JSON; the key in parentheses, nested at the dots) and in the
environment (the variable in parentheses). Flags override the environment,
which overrides the file, which overrides the defaults.
`

// Problems collects what is wrong with a configuration, so that its
// validation reports every problem at once.
type Problems []error

// Add records the problem fmt.Errorf(format, args...).
func (p *Problems) Add(format string, args ...any) { *p = append(*p, fmt.Errorf(format, args...)) }

// Require records "KEY must be set" when value is empty.
func (p *Problems) Require(key, value string) {
	if value == "" {
		p.Add("%s must be set", key)
	}
}

// HostPort records "KEY "ADDR": want host:port" when addr, the listen
// address of key, is neither empty (disabled) nor host:port.
func (p *Problems) HostPort(key, addr string) {
	if addr == "" {
		return
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		p.Add("%s %q: want host:port", key, addr)
	}
}

// Err joins the problems (errors.Join); nil when there are none.
func (p Problems) Err() error { return errors.Join(p...) }

// Count is n and noun, plural unless n is 1: "1 device", "2 devices".
func Count(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
