// Package quickstart holds the test that follows the quickstart
// (docs/quickstart.md and the README's walk-through) with the real
// binaries, so that the documents and the behaviour cannot drift apart.
// It has no code of its own.
package quickstart
