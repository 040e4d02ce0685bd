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
	"fmt"
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
