// Package deploytest starts the deployments of deploy/ as they are shipped
// and runs the kt client against them.
//
// There is no Docker engine on CI, so TestCompose reads
// deploy/compose/compose.yaml and runs each service's binary as a process
// on loopback with the command, flags, environment and mounted files the
// compose file gives it: MariaDB is the test server (a fresh database per
// run, dropped at the end), etcd, two Trillian log servers and two signers
// (internal/testing/trilliantest builds them), the keygen service
// (ktctl keygen), ktd and the two auditors. Where a container would reach
// another by its service name, or read a file at a container path, the
// test substitutes a loopback address or a file of its temporary
// directory: the table is [topology], the one place where the two meet.
// Then kt registers a handle, looks it up from a second device with the
// witness and audit quorums verified, and monitors it.
//
// TestConfigsLoad loads every ktauditor configuration of deploy/config
// with the real ktauditor, on the keys ktctl keygen wrote (ktd's are
// loaded by deploy's TestKtdConfigs and, for compose, started here).
package deploytest
