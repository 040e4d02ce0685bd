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
// TestSystemd starts deploy/systemd's ktd.service (ktd-embedded.yaml) and
// ktauditor.service (ktauditor-systemd.yaml) the same way, with their
// ExecStart, Environment and LoadCredential lines, and runs kt against
// them. TestKubernetesAuditorConfig loads ktauditor-kubernetes.yaml with
// a pod's environment from deploy/kubernetes/ktauditor.yaml and checks
// that the pod uses its own keys. Every configuration file of
// deploy/config is thus loaded by its binary here, except
// ktd-replicated.yaml, which deploy's TestKtdConfigs loads (and
// internal/testing/cluster runs in that mode).
package deploytest
