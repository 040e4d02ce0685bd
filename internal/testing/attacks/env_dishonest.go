package attacks

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/client"
	"github.com/keytrans/kt/internal/testing/attacks/adversary"
	"github.com/keytrans/kt/internal/testing/fixture"
	"github.com/keytrans/kt/internal/testing/testwitness"
	"github.com/keytrans/kt/log"
	"github.com/keytrans/kt/log/logapi"
)

// DishonestOptions configures DeployDishonest.
type DishonestOptions struct {
	// Auditors is the number of auditors in the audit policy, all of
	// which must vouch (0: no audit policy).
	Auditors int
	// Client are the options of the pinned parameters.
	Client client.Options
}

// Dishonest is the A11 operator's own deployment: an
// [adversary.Directory] on a real log (log/posix, cosigned by a test
// witness as the honest deployment's), reached over gRPC on loopback, with
// the log's HTTP read API, and the auditors of its audit policy following
// that log.
type Dishonest struct {
	Keys *Keys
	Dir  *adversary.Directory
	// Front is its Directory service and LogRPC its Log service, as the
	// clients reach them.
	Front  ktpb.DirectoryClient
	LogRPC ktpb.LogClient
	// LogURL is the log's read API; AuditPolicy the published audit
	// policy ("" without auditors).
	LogURL, AuditPolicy string
	Params              *client.Params
	Auditors            []*Auditor
	// AuditorURLs are the auditors' URLs, behind Switches (the adversary
	// can cut them off: A14).
	AuditorURLs []string
	Switches    []*Switch
}

// DeployDishonest starts the dishonest directory with fresh keys and a
// 1-of-1 witness policy (a test witness, which checks consistency only:
// the log publishes as usual), and, with o.Auditors, that many auditors
// in its audit policy (quorum: all of them), each with a witness key and
// an audit key. Epoch 0 is published, and audited when there is an
// audit policy.
func (w *World) DeployDishonest(ctx context.Context, o DishonestOptions) (*Dishonest, error) {
	k, err := NewKeys()
	if err != nil {
		return nil, err
	}
	wit, err := testwitness.New(fixture.WitnessName(Origin, 0))
	if err != nil {
		return nil, err
	}
	if err := wit.AddLog(Origin, k.LogVKey); err != nil {
		return nil, err
	}
	policy := fmt.Sprintf("witness w0 %s %s\ngroup g 1 w0\nquorum g\n", wit.VerifierKey(), w.httpServer(wit))
	base, err := w.dir("dishonest")
	if err != nil {
		return nil, err
	}
	lctx := context.WithoutCancel(ctx)
	l, err := fixture.OpenPosix(lctx, fixture.LogConfig{
		Dir: filepath.Join(base, "log"), Origin: Origin, Signer: k.LogSigner, WitnessPolicy: []byte(policy),
		WitnessTimeout: fixture.DefaultWitnessTimeout, CheckpointInterval: fixture.DefaultCheckpointInterval,
	})
	if err != nil {
		return nil, err
	}
	w.onClose(func() {
		cctx, cancel := context.WithTimeout(context.Background(), Wait)
		defer cancel()
		if err := l.Close(cctx); err != nil && !errors.Is(err, log.ErrClosed) {
			fmt.Printf("closing the dishonest log: %v\n", err)
		}
	})
	dd := &Dishonest{Keys: k, LogURL: w.httpServer(logapi.NewHandler(l, logapi.WithLogger(fixture.Quiet)))}

	// The auditors follow the log from its first checkpoint.
	var fas []*fixture.Auditor
	for i := range o.Auditors {
		url, sw := w.NewAuditorURL()
		a, err := w.StartAuditorAt(ctx, fixture.AuditorName(i), url, sw, k, dd.LogURL, AuditorOptions{Audit: true})
		if err != nil {
			return nil, err
		}
		dd.Auditors, dd.AuditorURLs, dd.Switches = append(dd.Auditors, a), append(dd.AuditorURLs, url), append(dd.Switches, sw)
		fas = append(fas, a.Auditor)
	}
	if o.Auditors > 0 {
		dd.AuditPolicy = fixture.AuditPolicy(0, fas...)
	}
	if dd.Dir, err = adversary.NewDirectory(ctx, adversary.DirectoryConfig{
		Origin: Origin, Log: l, LogVKey: k.LogVKey, VRF: k.VRF, Recovery: k.Recovery,
		WitnessPolicy: policy, AuditPolicy: dd.AuditPolicy,
		EpochInterval: EpochInterval, HeartbeatInterval: HeartbeatInterval,
	}); err != nil {
		return nil, err
	}
	srv := grpc.NewServer()
	ktpb.RegisterDirectoryServer(srv, dd.Dir)
	ktpb.RegisterLogServer(srv, dd.Dir)
	cc, err := w.serveGRPC(srv)
	if err != nil {
		return nil, err
	}
	dd.Front, dd.LogRPC = ktpb.NewDirectoryClient(cc), ktpb.NewLogClient(cc)
	pb, err := dd.Front.GetParameters(ctx, &ktpb.GetParametersRequest{})
	if err != nil {
		return nil, err
	}
	if dd.Params, err = client.NewParams(pb, o.Client); err != nil {
		return nil, err
	}
	if o.Auditors > 0 {
		ep0 := dd.Dir.Epochs()[0]
		if err := dd.Dir.Audit(ctx, ep0); err != nil {
			return nil, fmt.Errorf("epoch 0 not audited: %w (answers %+v)", err, ep0.Audit)
		}
	}
	return dd, nil
}

// NewDevice returns an initialized client of the dishonest directory.
func (dd *Dishonest) NewDevice(ctx context.Context, cfg client.Config) (*Device, error) {
	if cfg.Log == nil {
		cfg.Log = dd.LogRPC
	}
	st := &client.MemStore{}
	c, err := client.New(dd.Front, dd.Params, st, cfg)
	if err != nil {
		return nil, err
	}
	if _, err := c.Init(ctx, api.HPKESuite{}); err != nil {
		return nil, err
	}
	return &Device{Client: c, Store: st}, nil
}

// CloseEpoch closes an epoch (with the map overrides, if any) and, with
// an audit policy, fails unless it is audited and served.
func (dd *Dishonest) CloseEpoch(ctx context.Context) (*adversary.Epoch, error) {
	ep, err := dd.Dir.CloseEpoch(ctx)
	if err != nil {
		return nil, err
	}
	if dd.Dir.Served() != ep {
		return nil, fmt.Errorf("epoch %d is not served (auditors: %s)", ep.Number, auditAnswers(ep))
	}
	return ep, nil
}

// Enroll enrolls handle with c (any credential: the operator's own) and
// closes an epoch that shows it.
func (dd *Dishonest) Enroll(ctx context.Context, c *Device, handle string) (*client.LookupResult, error) {
	s, err := c.Enroll(ctx, handle, "operator", false)
	if err != nil {
		return nil, err
	}
	if _, err := dd.CloseEpoch(ctx); err != nil {
		return nil, err
	}
	return AwaitVersion(ctx, c, handle, s.Version)
}

// auditAnswers describes the auditors' answers about ep, naming together
// the auditors that gave the same answer.
func auditAnswers(ep *adversary.Epoch) string {
	var order []string
	who := map[string][]string{}
	for _, a := range ep.Audit {
		body := strings.Join(strings.Fields(a.Body), " ")
		if a.Status == 200 {
			body = "statement"
			if !a.Valid {
				body = "statement that does not verify"
			}
		}
		k := fmt.Sprintf("%d %s", a.Status, body)
		if _, ok := who[k]; !ok {
			order = append(order, k)
		}
		who[k] = append(who[k], a.Auditor)
	}
	var parts []string
	for _, k := range order {
		parts = append(parts, strings.Join(who[k], " and ")+": "+k)
	}
	return strings.Join(parts, "; ")
}

// serveGRPC serves s on a loopback port until the world closes and
// returns a connection to it.
func (w *World) serveGRPC(s *grpc.Server) (*grpc.ClientConn, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	go s.Serve(lis)
	w.onClose(s.Stop)
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	w.onClose(func() { cc.Close() })
	return cc, nil
}
