package client_test

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/client"
)

// exampleTB runs the network test helpers outside a test: failures panic,
// and Close runs the cleanups.
type exampleTB struct {
	ctx      context.Context
	cleanups []func()
	dirs     []string
}

func newExampleTB() *exampleTB { return &exampleTB{ctx: context.Background()} }

func (e *exampleTB) Helper()                           {}
func (e *exampleTB) Fatal(args ...any)                 { panic(fmt.Sprint(args...)) }
func (e *exampleTB) Fatalf(format string, args ...any) { panic(fmt.Sprintf(format, args...)) }
func (e *exampleTB) Errorf(format string, args ...any) { panic(fmt.Sprintf(format, args...)) }
func (e *exampleTB) Cleanup(f func())                  { e.cleanups = append(e.cleanups, f) }
func (e *exampleTB) Context() context.Context          { return e.ctx }
func (e *exampleTB) TempDir() string {
	d, err := os.MkdirTemp("", "kt-example")
	if err != nil {
		panic(err)
	}
	e.dirs = append(e.dirs, d)
	return d
}

func (e *exampleTB) Close() {
	for i := len(e.cleanups) - 1; i >= 0; i-- {
		e.cleanups[i]()
	}
	for _, d := range e.dirs {
		os.RemoveAll(d)
	}
}

// exampleDirectory starts a directory on loopback and returns a connected
// client factory (the real thing: a gRPC connection to ktd).
func exampleDirectory() (*exampleTB, *netEnv) {
	tb := newExampleTB()
	return tb, newNetEnv(tb)
}

// Look up a contact's devices: the answer is verified (VRF, map proof,
// epoch record, checkpoint signature, witness quorum, consistency,
// freshness) and the trusted checkpoint stored before Lookup returns.
func ExampleClient_Lookup() {
	tb, env := exampleDirectory()
	defer tb.Close()
	ctx := context.Background()

	bob := env.device(client.Config{})
	env.enroll(bob, "Bob@Example.com", false)

	// A sender's client: a gRPC DirectoryClient, the pinned parameters and
	// a durable store (a FileStore in an app).
	alice, err := client.New(env.dir, env.params, &client.MemStore{}, client.Config{})
	if err != nil {
		panic(err)
	}
	res, err := alice.Lookup(ctx, "bob@example.com")
	if err != nil {
		panic(err) // a *client.VerifyError naming the failed step
	}
	fmt.Println(res.Handle, "registered:", res.Registered, "version:", res.Version, "devices:", len(res.Recipients))
	fmt.Println("cosignatures verified:", len(res.Epoch.Cosignatures))

	absent, err := alice.Lookup(ctx, "carol@example.com")
	if err != nil {
		panic(err)
	}
	fmt.Println(absent.Handle, "registered:", absent.Registered)
	// Output:
	// mailto:bob@example.com registered: true version: 1 devices: 1
	// cosignatures verified: 1
	// mailto:carol@example.com registered: false
}

// Encrypt a message to every verified device of a contact (and to the
// sender's other devices); each device decrypts its own envelope.
func ExampleClient_Encrypt() {
	tb, env := exampleDirectory()
	defer tb.Close()
	ctx := context.Background()

	bob := env.device(client.Config{})
	env.enroll(bob, "bob@example.com", false)
	// The sender needs a handle: its envelopes are signed by its device,
	// and Bob verifies that device is in Alice's logged device set.
	alice := env.device(client.Config{})
	env.enroll(alice, "alice@example.com", false)

	envs, err := alice.Encrypt(ctx, "bob@example.com", []byte("hello, Bob"))
	if err != nil {
		panic(err) // nothing was encrypted: no fallback to unverified keys
	}
	fmt.Println("envelopes:", len(envs))
	wire, err := envs[0].MarshalBinary() // what the messenger transports
	if err != nil {
		panic(err)
	}
	pt, e, err := bob.Decrypt(ctx, wire)
	if err != nil {
		panic(err) // forged, replayed, removed or unknown sender: a typed error, no plaintext
	}
	fmt.Printf("%s (to %s, from %s: authenticated)\n", pt, e.To, e.From)
	// Output:
	// envelopes: 1
	// hello, Bob (to mailto:bob@example.com, from mailto:alice@example.com: authenticated)
}

// Monitor your own account: every change is classified by who authorized
// it, and a change not made by one of your devices is an alert.
func ExampleClient_Monitor() {
	tb, env := exampleDirectory()
	defer tb.Close()
	ctx := context.Background()

	bob := env.device(client.Config{})
	env.enroll(bob, "bob@example.com", false)
	reps, err := bob.Monitor(ctx)
	if err != nil {
		panic(err)
	}
	for _, c := range reps[0].Changes {
		fmt.Printf("version %d: %d device added by %v\n", c.Version, len(c.Added), c.By)
	}

	// The operator adds a device through its recovery path.
	env.recover(bob, "bob@example.com", func(s *api.DeviceSet) { addSorted(s, ghost(tb)) })
	reps, err = bob.Monitor(ctx)
	if err != nil {
		panic(err)
	}
	for _, a := range reps[0].Alerts {
		fmt.Println("ALERT:", a.Kind, "-", strings.TrimSpace(a.Message))
	}
	// Output:
	// version 1: 1 device added by this device
	// ALERT: recovery - changed by the directory's recovery path, not by you
}
