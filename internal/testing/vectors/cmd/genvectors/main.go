// Command genvectors writes the conformance test vectors of package
// internal/testing/vectors into testdata/vectors (run it from the
// repository root):
//
//	go run ./internal/testing/vectors/cmd/genvectors
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/keytrans/kt/internal/testing/vectors"
)

func main() {
	dir := flag.String("dir", "testdata/vectors", "directory to write the vector files to")
	flag.Parse()
	if err := run(*dir); err != nil {
		fmt.Fprintln(os.Stderr, "genvectors:", err)
		os.Exit(1)
	}
}

func run(dir string) error {
	existing, err := vectors.Read(dir)
	if err != nil {
		return err
	}
	files, err := vectors.Generate(existing)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, name := range vectors.Names {
		if err := os.WriteFile(filepath.Join(dir, name), files[name], 0o644); err != nil {
			return err
		}
	}
	return nil
}
