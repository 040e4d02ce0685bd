package main

import (
	"context"
	"encoding/base64"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/log/witness"
	"github.com/keytrans/kt/vrf"
)

// TestKeygen: keygen writes every key and both policies, which the
// policies' parsers accept; a second run keeps the keys; bad arguments
// are usage errors that write nothing.
func TestKeygen(t *testing.T) {
	out := filepath.Join(t.TempDir(), "keys")
	args := []string{"keygen", "--out", out, "--origin", "kt.example.com/log", "--auditors", "a1=http://a1:8480,a2=https://a2.example.org/"}
	runCLI(t, args...).want(t, exitOK, []string{"kt.example.com/log+", "a1 cosigning", "a2 audit", "2 of 2"})
	read := func(p string) string {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(out, p))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	for _, p := range []string{"ktd/log.key", "ktd/vrf.key", "ktd/recovery.key", "ktd/enroll-token.key", "a1/auditor.key", "a1/audit.key", "a2/auditor.key", "a2/audit.key"} {
		st, err := os.Stat(filepath.Join(out, p))
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, mode %v: want a private file", p, err, st.Mode())
		}
	}
	wp, err := witness.ParsePolicy([]byte(read("public/witness-policy")))
	if err != nil {
		t.Fatal(err)
	}
	ap, err := witness.ParseAuditPolicy([]byte(read("public/audit-policy")))
	if err != nil {
		t.Fatal(err)
	}
	if err := witness.CheckDisjoint(wp, ap); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(read("public/witness-policy"), "witness a2 ") || !strings.Contains(read("public/witness-policy"), " https://a2.example.org\n") {
		t.Errorf("witness policy:\n%s", read("public/witness-policy"))
	}
	if !strings.HasPrefix(read("public/log.vkey"), "kt.example.com/log+") || !strings.HasPrefix(read("public/recovery.pub"), "kt-recovery-public:") || !strings.HasPrefix(read("public/vrf.pub"), "kt-vrf-public:") {
		t.Error("public keys malformed")
	}
	logKey, vkey := read("ktd/log.key"), read("public/log.vkey")
	// Again, with one quorum less: the keys stay, the policies change.
	runCLI(t, append(args, "--quorum", "1")...).want(t, exitOK, []string{"1 of 2"})
	if read("ktd/log.key") != logKey || read("public/log.vkey") != vkey {
		t.Error("a second keygen replaced the log key")
	}
	if !strings.Contains(read("public/audit-policy"), "group auditors 1 a1 a2") {
		t.Errorf("audit policy:\n%s", read("public/audit-policy"))
	}
	// Another origin with the same keys: refused (the log key names the origin).
	runCLI(t, "keygen", "--out", out, "--origin", "other.example/log", "--auditors", "a1=http://a1:8480").want(t, exitIO, nil, "origin")
	for name, bad := range map[string][]string{
		"no out":         {"--origin", "o/log", "--auditors", "a=http://a"},
		"no origin":      {"--out", out + "2", "--auditors", "a=http://a"},
		"no auditors":    {"--out", out + "2", "--origin", "o/log"},
		"no url":         {"--out", out + "2", "--origin", "o/log", "--auditors", "a"},
		"ftp url":        {"--out", out + "2", "--origin", "o/log", "--auditors", "a=ftp://a"},
		"same name":      {"--out", out + "2", "--origin", "o/log", "--auditors", "a=http://a,a=http://b"},
		"quorum too big": {"--out", out + "2", "--origin", "o/log", "--auditors", "a=http://a", "--quorum", "2"},
	} {
		r := runCLI(t, append([]string{"keygen"}, bad...)...)
		if r.code != exitUsage {
			t.Errorf("%s: exit status %d, want %d (%s)", name, r.code, exitUsage, r.stderr)
		}
		if _, err := os.Stat(out + "2"); err == nil {
			t.Errorf("%s: wrote %s", name, out+"2")
		}
	}
}

// paramsServer answers GetParameters with p.
type paramsServer struct {
	ktpb.UnimplementedDirectoryServer
	p *ktpb.Parameters
}

func (s *paramsServer) GetParameters(context.Context, *ktpb.GetParametersRequest) (*ktpb.Parameters, error) {
	return s.p, nil
}

func serveParams(t *testing.T, p *ktpb.Parameters) string {
	t.Helper()
	s := grpc.NewServer()
	ktpb.RegisterDirectoryServer(s, &paramsServer{p: p})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(lis)
	t.Cleanup(s.Stop)
	return lis.Addr().String()
}

// TestParams: params prints the directory's parameters when they are the
// deployment's (keygen's files), and refuses, status 1, each part that
// differs: the origin, the log key, the witness policy, the recovery key,
// and parameters a client refuses (quorum none).
func TestParams(t *testing.T) {
	out := filepath.Join(t.TempDir(), "keys")
	runCLI(t, "keygen", "--out", out, "--origin", "kt.example.com/log", "--auditors", "a1=http://a1:8480,a2=http://a2:8480").want(t, exitOK, nil)
	read := func(p string) string {
		b, err := os.ReadFile(filepath.Join(out, "public", p))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	rec, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(strings.TrimSpace(read("recovery.pub")), "kt-recovery-public:"))
	if err != nil {
		t.Fatal(err)
	}
	good := func() *ktpb.Parameters {
		return &ktpb.Parameters{Origin: "kt.example.com/log", LogPublicKey: strings.TrimSpace(read("log.vkey")),
			VrfPublicKey: strings.TrimSpace(read("vrf.pub")), RecoveryPublicKey: rec,
			WitnessPolicy: read("witness-policy"), AuditPolicy: read("audit-policy"), EpochIntervalMs: 1000, HeartbeatIntervalMs: 10000}
	}
	pub := func(p string) string { return filepath.Join(out, "public", p) }
	args := func(addr string) []string {
		return []string{"params", "--grpc", addr, "--log-key", pub("log.vkey"), "--policy", pub("witness-policy"), "--recovery-key", pub("recovery.pub"), "--vrf-public-key", pub("vrf.pub")}
	}
	// Without --vrf-public-key, a malformed VRF key is still refused: a
	// client refuses the parameters.
	bad := good()
	bad.VrfPublicKey = "kt-vrf-public:nope"
	runCLI(t, args(serveParams(t, bad))[:9]...).want(t, exitVerify, nil, "a client refuses")
	r := runCLI(t, args(serveParams(t, good()))...)
	r.want(t, exitOK, []string{`"witnessPolicy"`, `"auditPolicy"`})
	var got ktpb.Parameters
	if err := protojson.Unmarshal([]byte(r.stdout), &got); err != nil || !proto.Equal(&got, good()) {
		t.Fatalf("params printed %v (%v), not the directory's parameters", &got, err)
	}
	otherKey := func() string {
		_, vk, err := note.GenerateKey(nil, "kt.example.com/log")
		if err != nil {
			t.Fatal(err)
		}
		return vk
	}
	for name, edit := range map[string]func(*ktpb.Parameters){
		"origin":                             func(p *ktpb.Parameters) { p.Origin = "other.example/log" },
		"log key":                            func(p *ktpb.Parameters) { p.LogPublicKey = otherKey() },
		"witness policy":                     func(p *ktpb.Parameters) { p.WitnessPolicy += "# changed\n" },
		"recovery key":                       func(p *ktpb.Parameters) { p.RecoveryPublicKey = make([]byte, 32) },
		"VRF key":                            func(p *ktpb.Parameters) { p.VrfPublicKey = otherVRF(t) },
		"malformed VRF key (client refuses)": func(p *ktpb.Parameters) { p.VrfPublicKey = "kt-vrf-public:nope" },
	} {
		p := good()
		edit(p)
		if r := runCLI(t, args(serveParams(t, p))...); r.code != exitVerify {
			t.Errorf("%s changed: exit status %d, want %d\n%s%s", name, r.code, exitVerify, r.stdout, r.stderr)
		}
	}
	// A policy a client refuses, even when it is the pinned file.
	none := filepath.Join(t.TempDir(), "none")
	os.WriteFile(none, []byte("quorum none\n"), 0o644)
	p := good()
	p.WitnessPolicy, p.AuditPolicy = "quorum none\n", ""
	runCLI(t, "params", "--grpc", serveParams(t, p), "--log-key", pub("log.vkey"), "--policy", none).want(t, exitVerify, nil, "a client refuses")
	// Unreachable: an I/O error.
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := l.Addr().String()
	l.Close()
	runCLI(t, append(args(addr), "--timeout", "2s")...).want(t, exitIO, nil)
}

// otherVRF is a valid VRF public key that is not the deployment's.
func otherVRF(t *testing.T) string {
	k, err := vrf.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := k.Public().MarshalText()
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
