//go:build race

package faults

// raceEnabled: the test binary runs under the race detector, so the ktd
// binary is built with -race too (its packages are then in the build cache
// already).
const raceEnabled = true
