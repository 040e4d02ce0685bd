// Package faults is the fault-injection suite of issue 17: it builds the
// ktd and ktctl binaries and drives them through storage damage (single
// bits flipped in tiles, entry bundles, the checkpoint file, the tree
// state and the state store), SIGKILL under write load, and checks that no
// checkpoint that does not extend the last signed one is ever signed, that
// every acknowledged change survives, and that ktd serves again within 3s
// of a restart; a read-only log directory, a full disk (a small tmpfs,
// root only), `ktd backup` under load and a restored backup behind its
// witness; half-open gRPC calls (HEADERS and no request) from more
// connections than limits.max_conns_per_peer, cut after
// limits.recv_timeout while another peer is served (the listener and the
// receive timer themselves are tested in directory/grpcserver).
//
// The package has no code of its own; everything is in its _test.go files.
package faults
