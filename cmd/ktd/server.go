package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"golang.org/x/mod/sumdb/note"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	_ "github.com/go-sql-driver/mysql"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/directory"
	"github.com/keytrans/kt/directory/grpcserver"
	"github.com/keytrans/kt/directory/lease"
	"github.com/keytrans/kt/directory/payloadstore"
	"github.com/keytrans/kt/log"
	"github.com/keytrans/kt/log/logapi"
	"github.com/keytrans/kt/log/posix"
	"github.com/keytrans/kt/log/trillian"
	"github.com/keytrans/kt/vrf"

	"github.com/keytrans/kt/internal/ops"
)

// shutdownTimeout bounds graceful shutdown: in-flight requests get this
// long to finish before connections are cut.
const shutdownTimeout = 30 * time.Second

// writesFailedShutdown bounds the shutdown after the directory stopped on
// a refused write (issue 17 item 2).
const writesFailedShutdown = 3 * time.Second

// addrs are the addresses ktd listens on; empty when disabled.
type addrs struct {
	HTTP, GRPC, Operator, Metrics string
}

// server holds ktd's running parts. Its fields are set by newServer and
// read-only afterwards.
type server struct {
	cfg         *Config
	logger      *slog.Logger
	log         log.Log
	tiles       http.Handler // the backend's C2SP tlog-tiles (every backend serves them)
	verifierKey string
	// nextVerifierKey is the vkey of log.next_key_file, "" if none.
	nextVerifierKey string
	vrfPublic       string
	recoveryPub     ed25519.PublicKey
	dir             service
	d               *directory.Directory
	metrics         *metrics
	// writesFailed is set when a standalone directory stopped on a
	// refused write (full or read-only disk).
	writesFailed atomic.Bool
	// closers release what newServer opened, in reverse order.
	closers []func(context.Context) error
}

// faultingLog is a log backend that can stop signing for good (the
// embedded backend, on damaged storage: posix.Log.Faulted).
type faultingLog interface {
	Faulted() <-chan struct{}
	Fault() error
}

// service is what ktd serves from the directory core.
type service interface {
	ktpb.DirectoryServer
	ktpb.LogServer
	ktpb.OperatorServer
	Close(context.Context) error
}

// run starts ktd and serves until ctx is done, then shuts down gracefully.
// When ready is non-nil, the bound addresses are sent on it once every
// listener accepts connections.
func run(ctx context.Context, cfg *Config, logger *slog.Logger, ready chan<- addrs) (err error) {
	s, err := newServer(ctx, cfg, logger)
	if err != nil {
		return err
	}
	defer func() {
		timeout := shutdownTimeout
		if s.writesFailed.Load() {
			// The disk refused a write: the final checkpoint gets a short
			// chance only, so that a supervisor restarts ktd promptly.
			timeout = writesFailedShutdown
		}
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
		defer cancel()
		err = errors.Join(err, s.close(cctx))
	}()

	var publicTLS *tls.Config
	if cfg.TLS.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLS.CertFile, cfg.TLS.KeyFile)
		if err != nil {
			return fmt.Errorf("loading the TLS certificate: %w", err)
		}
		publicTLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}

	var lns listeners
	defer lns.closeAll()
	var bound addrs

	// Public gRPC.
	gopts := grpcserver.Options{
		MaxRecvMsgSize: cfg.Limits.MaxRequestBytes,
		RateLimit:      cfg.Limits.RequestsPerSecond,
		RateBurst:      cfg.Limits.Burst,
		MaxPeers:       cfg.Limits.MaxPeers,
		RecvTimeout:    cfg.Limits.RecvTimeout,
		TLS:            publicTLS,
		Metrics:        s.metrics,
		Logger:         logger,
	}
	// The HTTP/JSON API (design.md 10.1) shares the public gRPC server's
	// limits, rate limiter and error mapping.
	public, jsonAPI, err := grpcserver.NewWithJSON(gopts, s.dir, s.dir)
	if err != nil {
		return err
	}
	gln, err := lns.listen("grpc_listen", cfg.GRPCListen)
	if err != nil {
		return err
	}
	bound.GRPC = gln.Addr().String()
	// Half-open calls (headers, no request) are bounded per connection
	// (MaxConcurrentStreams), in time (RecvTimeout) and in connections
	// per peer here (issue 17).
	gln = grpcserver.LimitConnsPerPeer(gln, cfg.Limits.MaxConnsPerPeer)

	// Operator gRPC.
	var operator *grpc.Server
	var oln net.Listener
	if cfg.OperatorListen != "" {
		oopts := grpcserver.Options{
			MaxRecvMsgSize: cfg.Limits.MaxRequestBytes,
			RateLimit:      -1,
			Metrics:        s.metrics,
			Logger:         logger,
		}
		if cfg.Operator.ClientCAFile != "" {
			oopts.TLS, err = operatorTLS(publicTLS, cfg.Operator.ClientCAFile)
			if err != nil {
				return err
			}
		}
		if operator, err = grpcserver.NewOperator(oopts, s.dir); err != nil {
			return err
		}
		operator.RegisterService(&backupServiceDesc, s)
		if oln, err = lns.listen("operator_listen", cfg.OperatorListen); err != nil {
			return err
		}
		bound.Operator = oln.Addr().String()
	}

	// Public HTTP.
	var hs *http.Server
	var hln net.Listener
	if cfg.HTTPListen != "" {
		hs = &http.Server{
			Handler:           s.handler(jsonAPI),
			ReadHeaderTimeout: 10 * time.Second,
			ReadTimeout:       30 * time.Second,
			WriteTimeout:      60 * time.Second,
			IdleTimeout:       2 * time.Minute,
			MaxHeaderBytes:    16 << 10,
			ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
		}
		if hln, err = lns.listen("http_listen", cfg.HTTPListen); err != nil {
			return err
		}
		bound.HTTP = hln.Addr().String()
		if publicTLS != nil {
			hln = tls.NewListener(hln, publicTLS)
		}
	}

	// Metrics and pprof.
	var ms *http.Server
	var mln net.Listener
	if cfg.MetricsListen != "" {
		if mln, err = lns.listen("metrics_listen", cfg.MetricsListen); err != nil {
			return err
		}
		bound.Metrics = mln.Addr().String()
		ms = ops.MetricsServer(s.metrics.reg, cfg.MetricsListen, logger)
	}

	scheme := "http"
	if publicTLS != nil {
		scheme = "https"
	}
	logger.Info("ktd serving",
		"grpc", bound.GRPC,
		"grpc_tls", publicTLS != nil,
		"http", urlOf(scheme, bound.HTTP),
		"operator", bound.Operator,
		"metrics", urlOf("http", bound.Metrics),
		"backend", cfg.Log.Backend,
		"origin", cfg.Log.Origin,
		"log_public_key", s.verifierKey,
		"vrf_public_key", s.vrfPublic,
		"recovery_public_key", base64.StdEncoding.EncodeToString(s.recoveryPub),
		"enrollment", cfg.Enrollment.Mode,
		"data_dir", cfg.DataDir,
		"replicated", cfg.Cluster.DSN != "",
		"audit_policy", cfg.AuditPolicy,
		"role", s.d.Role())
	for _, l := range []struct{ key, addr string }{{"grpc_listen", bound.GRPC}, {"http_listen", bound.HTTP}} {
		if l.addr != "" && publicTLS == nil && !ops.IsLoopback(l.addr) {
			logger.Warn("public listener without TLS: terminate TLS in front of ktd or set tls.cert_file", "listener", l.key, "addr", l.addr)
		}
	}

	lns.release() // the servers own the listeners now
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return public.Serve(gln) })
	if operator != nil {
		g.Go(func() error { return operator.Serve(oln) })
	}
	if hs != nil {
		g.Go(func() error { return ops.Serve(hs, hln) })
	}
	if ms != nil {
		g.Go(func() error { return ops.Serve(ms, mln) })
	}
	if ready != nil {
		ready <- bound
	}
	if fl, ok := s.log.(faultingLog); ok {
		// The log refused to sign a checkpoint that does not extend the
		// last one (damaged storage): nothing will be published, so exit
		// rather than serve stale answers and ask clients to retry.
		g.Go(func() error {
			select {
			case <-fl.Faulted():
				err := fmt.Errorf("the log stopped signing: %w; repair or restore the data directory (docs/operations.md, Faults)", fl.Fault())
				if errors.Is(fl.Fault(), posix.ErrUnwritable) {
					err = fmt.Errorf("the log stopped: %w; make the data directory writable and restart ktd (docs/operations.md, Faults)", fl.Fault())
				}
				logger.Error("ktd: " + err.Error())
				return err
			case <-gctx.Done():
				return nil
			}
		})
	}
	if stopped := s.d.Stopped(); stopped != nil {
		// Replicated: an instance that stopped writing (lease lost) or
		// following exits, for its supervisor to restart it as a reader.
		g.Go(func() error {
			select {
			case <-stopped:
				err := fmt.Errorf("the directory stopped (%v); exiting so that a supervisor restarts this instance, which then follows the log as a reader", s.d.StopError())
				if s.cfg.Cluster.DSN == "" {
					// Standalone: the log refused a write (a full or
					// read-only disk); writes cannot resume without a
					// restart, so fail rather than ask clients to retry.
					s.writesFailed.Store(true)
					err = fmt.Errorf("the directory stopped writing (%w); exiting so that a supervisor restarts ktd once the data directory takes writes again (docs/operations.md, Faults)", s.d.StopError())
				}
				logger.Error("ktd: " + err.Error())
				return err
			case <-gctx.Done():
				return nil
			}
		})
	}
	g.Go(func() error {
		<-gctx.Done()
		logger.Info("shutting down")
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
		defer cancel()
		var sg errgroup.Group
		sg.Go(func() error { stopGRPC(sctx, public); return nil })
		if operator != nil {
			sg.Go(func() error { stopGRPC(sctx, operator); return nil })
		}
		for _, h := range []*http.Server{hs, ms} {
			if h != nil {
				sg.Go(func() error { return h.Shutdown(sctx) })
			}
		}
		return sg.Wait()
	})
	return g.Wait()
}

func urlOf(scheme, addr string) string {
	if addr == "" {
		return ""
	}
	return scheme + "://" + addr
}

// stopGRPC lets in-flight calls finish until ctx is done, then cuts them.
func stopGRPC(ctx context.Context, s *grpc.Server) {
	done := make(chan struct{})
	go func() {
		s.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		s.Stop()
		<-done
	}
}

// listeners closes the listeners it opened unless released.
type listeners []net.Listener

func (l *listeners) listen(key, addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", key, err)
	}
	*l = append(*l, ln)
	return ln, nil
}

func (l *listeners) release() { *l = nil }

func (l *listeners) closeAll() {
	for _, ln := range *l {
		ln.Close()
	}
}

func operatorTLS(public *tls.Config, caFile string) (*tls.Config, error) {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("operator.client_ca_file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("operator.client_ca_file %s: no PEM certificates", caFile)
	}
	c := public.Clone()
	c.ClientAuth = tls.RequireAndVerifyClientCert
	c.ClientCAs = pool
	c.MinVersion = tls.VersionTLS13
	return c, nil
}

// newServer opens the keys, the log and the directory. On error it closes
// what it opened.
func newServer(ctx context.Context, cfg *Config, logger *slog.Logger) (_ *server, err error) {
	s := &server{cfg: cfg, logger: logger, metrics: newMetrics()}
	defer func() {
		if err != nil {
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
			defer cancel()
			err = errors.Join(err, s.close(cctx))
		}
	}()
	// The witness policy is checked before anything is created or started.
	policy, err := readPolicy(cfg.Witness.PolicyFile)
	if err != nil {
		return nil, err
	}
	auditPolicy, err := readAuditPolicy(cfg.AuditPolicy, policy)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("creating data directory: %w", err)
	}

	// Keys.
	signer, verifier, err := log.LoadOrCreateSigner(cfg.Log.KeyFile, cfg.Log.Origin)
	if err != nil {
		return nil, err
	}
	skey, err := os.ReadFile(cfg.Log.KeyFile)
	if err != nil {
		return nil, err
	}
	if s.verifierKey, err = log.VerifierKey(string(skey)); err != nil {
		return nil, err
	}
	// SPEC(design.md 11.1): during a log key rotation the log signs with
	// both keys.
	var nextSigners []note.Signer
	if cfg.Log.NextKeyFile != "" {
		if cfg.Log.Backend != "posix" {
			return nil, fmt.Errorf("log.next_key_file: log key rotation needs the posix backend")
		}
		ns, _, err := log.LoadOrCreateSigner(cfg.Log.NextKeyFile, cfg.Log.Origin)
		if err != nil {
			return nil, err
		}
		nkey, err := os.ReadFile(cfg.Log.NextKeyFile)
		if err != nil {
			return nil, err
		}
		if s.nextVerifierKey, err = log.VerifierKey(string(nkey)); err != nil {
			return nil, err
		}
		if s.nextVerifierKey == s.verifierKey {
			return nil, fmt.Errorf("log.next_key_file holds the key of log.key_file")
		}
		nextSigners = append(nextSigners, ns)
		logger.Warn("LOG KEY ROTATION: checkpoints are signed by the log key and the next log key", "next_log_public_key", s.nextVerifierKey)
	}
	vrfKey, created, err := loadVRFKey(cfg.Directory.VRFKeyFile)
	if err != nil {
		return nil, err
	}
	logCreated(logger, created, "VRF key", cfg.Directory.VRFKeyFile)
	s.vrfPublic = vrfKey.Public().String()
	var vrfNext, vrfPrev *vrf.PrivateKey
	if f := cfg.Directory.VRFNextKeyFile; f != "" {
		if vrfNext, created, err = loadVRFKey(f); err != nil {
			return nil, err
		}
		logCreated(logger, created, "next VRF key", f)
		if vrfNext.Public().Equal(vrfKey.Public()) {
			return nil, fmt.Errorf("directory.vrf_next_key_file holds the key of directory.vrf_key_file")
		}
		logger.Warn("VRF KEY ROTATION: the next VRF key is configured", "next_vrf_public_key", vrfNext.Public().String())
	}
	if f := cfg.Directory.VRFPrevKeyFile; f != "" {
		text, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("directory.vrf_prev_key_file: %w", err)
		}
		if vrfPrev, err = vrf.ParsePrivateKey(string(text)); err != nil {
			return nil, fmt.Errorf("directory.vrf_prev_key_file: %w", err)
		}
	}
	var private bool
	s.recoveryPub, private, created, err = loadRecoveryKey(cfg.Directory.RecoveryKeyFile)
	if err != nil {
		return nil, err
	}
	logCreated(logger, created, "recovery key", cfg.Directory.RecoveryKeyFile)
	if private {
		logger.Info("the recovery private key is in the data directory; in production keep it offline and leave only its public form (kt-recovery-public:...) here", "file", cfg.Directory.RecoveryKeyFile)
	}
	creds, err := enrollmentCredentials(cfg, logger)
	if err != nil {
		return nil, err
	}
	// Log.
	var tl *trillian.Log
	switch cfg.Log.Backend {
	case "posix":
		l, err := posix.New(ctx, posix.Config{
			Dir:                filepath.Join(cfg.DataDir, "log"),
			Origin:             cfg.Log.Origin,
			Signer:             signer,
			AdditionalSigners:  nextSigners,
			Verifier:           verifier,
			FullCheck:          cfg.Log.FullCheck,
			WitnessPolicy:      policy,
			WitnessTimeout:     cfg.Witness.Timeout,
			CheckpointInterval: cfg.Log.CheckpointInterval,
		})
		if err != nil {
			// SPEC(design.md 17): refuse to start on storage that does not
			// reproduce the last signed checkpoint; the error names the files.
			return nil, fmt.Errorf("opening the embedded log: %w", err)
		}
		s.log, s.tiles = l, l.TilesHandler()
	case "trillian":
		// One address: gRPC's DNS resolver, so that a name resolving to
		// every server fails over between them; several: trillian.Dial
		// balances over the list.
		var conn *grpc.ClientConn
		if addrs := trillianAddrs(cfg.Log.Trillian.Address); len(addrs) == 1 {
			conn, err = grpc.NewClient(addrs[0], grpc.WithTransportCredentials(insecure.NewCredentials()))
		} else {
			conn, err = trillian.Dial(addrs)
		}
		if err != nil {
			return nil, fmt.Errorf("connecting to Trillian at %s: %w", cfg.Log.Trillian.Address, err)
		}
		s.closers = append(s.closers, func(context.Context) error { return conn.Close() })
		l, err := trillian.New(ctx, trillian.Config{
			Conn:               conn,
			TreeID:             cfg.Log.Trillian.TreeID,
			CreateTree:         cfg.Log.Trillian.CreateTree,
			Origin:             cfg.Log.Origin,
			Signer:             signer,
			WitnessPolicy:      policy,
			WitnessTimeout:     cfg.Witness.Timeout,
			CheckpointInterval: cfg.Log.CheckpointInterval,
		})
		if err != nil {
			return nil, fmt.Errorf("opening the Trillian log: %w", err)
		}
		// SPEC(design.md 10): tlog-tiles on every backend, computed from
		// Trillian's entries.
		s.log, tl, s.tiles = l, l, l.TilesHandler()
	}
	s.closers = append(s.closers, s.log.Close)
	var repl *directory.Replication
	if cfg.Cluster.DSN != "" {
		if repl, err = s.openCluster(ctx, tl); err != nil {
			return nil, err
		}
	}

	// Directory.
	d, err := directory.New(ctx, directory.Config{
		Log:                s.log,
		Origin:             cfg.Log.Origin,
		LogVerifierKey:     s.verifierKey,
		NextLogVerifierKey: s.nextVerifierKey,
		VRFKey:             vrfKey,
		NextVRFKey:         vrfNext,
		PrevVRFKey:         vrfPrev,
		VerifyVRFProof:     vrf.VerifyRotationProof,
		RecoveryKey:        s.recoveryPub,
		Credentials:        creds,
		StateDir:           filepath.Join(cfg.DataDir, "state"),
		WitnessPolicy:      string(policy),
		AuditPolicy:        auditPolicy,
		EpochInterval:      cfg.Directory.EpochInterval,
		HeartbeatInterval:  cfg.Directory.HeartbeatInterval,
		CacheSize:          cfg.Directory.CacheSize,
		Logger:             logger,
		Metrics:            s.metrics,
		Replication:        repl,
	})
	if err != nil {
		return nil, fmt.Errorf("opening the directory: %w", err)
	}
	s.dir, s.d = d, d
	s.metrics.watchDirectory(d, len(auditPolicy) > 0)
	s.metrics.watchWrites(s)
	s.closers = append(s.closers, d.Close)
	return s, nil
}

func logCreated(logger *slog.Logger, created bool, what, path string) {
	if created {
		logger.Info("created "+what, "file", path)
	}
}

// enrollmentCredentials returns the enrollment credential checker of the configured
// mode.
func enrollmentCredentials(cfg *Config, logger *slog.Logger) (directory.Credentials, error) {
	if cfg.Enrollment.Mode == "open" {
		logger.Warn("!!! enrollment.mode=open: INSECURE, anyone can enroll any free handle; for demos and tests only !!!")
		return directory.OpenEnrollment{}, nil
	}
	tc, err := tokenCredentials(cfg, logger)
	if err != nil {
		return nil, err
	}
	return tc, nil
}

func tokenCredentials(cfg *Config, logger *slog.Logger) (*directory.TokenCredentials, error) {
	key, created, err := loadTokenKey(cfg.Enrollment.TokenKeyFile)
	if err != nil {
		return nil, err
	}
	logCreated(logger, created, "enrollment token key", cfg.Enrollment.TokenKeyFile)
	tc, err := directory.NewTokenCredentials(key)
	if err != nil {
		return nil, err
	}
	tc.TTL = cfg.Enrollment.TokenTTL
	return tc, nil
}

// issueToken prints an enrollment token for handle, normalised first, to
// the returned string.
func issueToken(cfg *Config, logger *slog.Logger, handle string) (string, error) {
	if cfg.Enrollment.Mode != "token" {
		return "", fmt.Errorf("enrollment.mode is %q: tokens are only used in mode \"token\"", cfg.Enrollment.Mode)
	}
	h, err := api.NormalizeHandle(handle)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return "", fmt.Errorf("creating data directory: %w", err)
	}
	tc, err := tokenCredentials(cfg, logger)
	if err != nil {
		return "", err
	}
	return tc.IssueToken(h), nil
}

// handler is the public HTTP listener's: the log's read API (and tiles),
// the Directory's HTTP/JSON API (jsonAPI, when not nil) and /healthz.
func (s *server) handler(jsonAPI http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/log/v1/", logapi.NewHandler(s.log))
	if jsonAPI != nil {
		mux.Handle(grpcserver.JSONPrefix, jsonAPI)
	}
	if s.tiles != nil {
		mux.Handle("/checkpoint", s.tiles)
		mux.Handle("/tile/", s.tiles)
	}
	mux.HandleFunc("GET /healthz", s.healthz)
	return mux
}

// healthz answers 200 once the log has a checkpoint and the directory
// serves an epoch, 503 otherwise (with the reason, which holds nothing
// secret: the domain error's message).
func (s *server) healthz(w http.ResponseWriter, r *http.Request) {
	if fl, ok := s.log.(faultingLog); ok && fl.Fault() != nil {
		msg := "log storage corrupt: signing stopped"
		if errors.Is(fl.Fault(), posix.ErrUnwritable) {
			msg = "log storage not writable: signing stopped"
		}
		http.Error(w, msg, http.StatusServiceUnavailable)
		return
	}
	if s.d.Role() == directory.RoleStopped {
		// Standalone too: writes are refused until a restart, so never
		// answer 200 (issue 17 item 2).
		http.Error(w, "stopped: writes refused", http.StatusServiceUnavailable)
		return
	}
	if _, err := s.log.Checkpoint(r.Context()); err != nil {
		http.Error(w, "log not ready", http.StatusServiceUnavailable)
		s.logger.Debug("healthz: log not ready", "err", err)
		return
	}
	if _, err := s.dir.GetEpoch(r.Context(), &ktpb.GetEpochRequest{}); err != nil {
		http.Error(w, "directory not ready", http.StatusServiceUnavailable)
		s.logger.Debug("healthz: directory not ready", "err", err)
		return
	}
	if s.cfg.Cluster.DSN == "" {
		fmt.Fprintln(w, "ok")
		return
	}
	// Replicated: the role, for load balancers and operators.
	role := s.d.Role()
	fmt.Fprintln(w, "ok", role)
}

// close releases everything newServer opened, last opened first: the
// directory before the log it writes to.
func (s *server) close(ctx context.Context) error {
	var errs []error
	for i := len(s.closers) - 1; i >= 0; i-- {
		errs = append(errs, s.closers[i](ctx))
	}
	s.closers = nil
	return errors.Join(errs...)
}

// openCluster opens the replicated mode's databases and tables and
// returns the directory's Replication.
func (s *server) openCluster(ctx context.Context, tl *trillian.Log) (*directory.Replication, error) {
	cl := s.cfg.Cluster
	open := func(key, dsn string) (*sql.DB, error) {
		db, err := sql.Open("mysql", dsn)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", key, err)
		}
		s.closers = append(s.closers, func(context.Context) error { return db.Close() })
		pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := db.PingContext(pctx); err != nil {
			return nil, fmt.Errorf("%s: connecting: %w", key, err)
		}
		return db, nil
	}
	db, err := open("cluster.dsn", cl.DSN)
	if err != nil {
		return nil, err
	}
	tdb := db
	if cl.TrillianDSN != cl.DSN {
		if tdb, err = open("cluster.trillian_dsn", cl.TrillianDSN); err != nil {
			return nil, err
		}
	}
	if err := lease.CreateTable(ctx, db); err != nil {
		return nil, err
	}
	if err := payloadstore.CreateTable(ctx, db); err != nil {
		return nil, err
	}
	if _, err := trillian.Unsequenced(ctx, tdb, tl.TreeID()); err != nil {
		return nil, fmt.Errorf("cluster.trillian_dsn must reach Trillian's database: %w", err)
	}
	host, _ := os.Hostname()
	var nonce [8]byte
	_, _ = rand.Read(nonce[:])
	holder := fmt.Sprintf("%s %s/%d/%x", cl.Advertise, host, os.Getpid(), nonce)
	if len(holder) > 190 {
		holder = holder[:190]
	}
	return &directory.Replication{
		Lease: lease.Config{
			DB:       db,
			Name:     cl.LeaseName,
			Holder:   holder,
			Duration: cl.LeaseDuration,
			Margin:   cl.Margin,
		},
		Payloads:     payloadstore.New(db),
		Drain:        func(ctx context.Context) error { return tl.Drain(ctx, tdb, 50*time.Millisecond) },
		PollInterval: cl.PollInterval,
	}, nil
}
