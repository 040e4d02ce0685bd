package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	fnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/sync/errgroup"

	"github.com/keytrans/kt/auditor"
	"github.com/keytrans/kt/internal/keyfile"
	"github.com/keytrans/kt/internal/ops"
	"github.com/keytrans/kt/log"
	"github.com/keytrans/kt/log/logapi"
	"github.com/keytrans/kt/log/witness"
)

// shutdownTimeout bounds graceful shutdown.
const shutdownTimeout = 30 * time.Second

// addrs are the bound addresses; Metrics is empty when disabled.
type addrs struct {
	HTTP, Metrics string
}

// loadKey loads or creates the cosigning key and returns the signer and
// its tlog-cosignature/v1 verifier key.
func loadKey(cfg *Config) (note.Signer, string, error) {
	return loadSigner(cfg.KeyFile, cfg.Name, "cosigning key")
}

// loadAuditKey loads or creates the audit key (cfg.AuditKey, which must be
// set), named after the cosigning key (design.md 14.1: NAME/audit), and
// returns the signer and its verifier key. It refuses an audit key that is
// the cosigning key.
//
// SPEC(design.md 14.1)
func loadAuditKey(cfg *Config) (note.Signer, string, error) {
	if cfg.AuditKey == "" {
		return nil, "", errors.New("audit_key is not set")
	}
	w, wvk, err := loadKey(cfg)
	if err != nil {
		return nil, "", err
	}
	s, avk, err := loadSigner(cfg.AuditKey, w.Name()+"/audit", "audit key")
	if err != nil {
		return nil, "", err
	}
	// SPEC(design.md 14.1): ktauditor calls witness.CheckDisjoint on its
	// own two keys.
	wp, err := witness.ParsePolicy([]byte("witness w " + wvk + "\nquorum w\n"))
	if err != nil {
		return nil, "", err
	}
	ap, err := witness.ParseAuditPolicy([]byte("auditor a " + avk + "\nquorum a\n"))
	if err != nil {
		return nil, "", err
	}
	if err := witness.CheckDisjoint(wp, ap); err != nil {
		return nil, "", fmt.Errorf("audit key %s is the cosigning key %s (%w); move %s away: a new audit key is made at the next start", cfg.AuditKey, cfg.KeyFile, err, cfg.AuditKey)
	}
	return s, avk, nil
}

// loadSigner loads the note signer key at path, or creates it named name,
// and returns it as a tlog-cosignature/v1 signer with its verifier key.
func loadSigner(path, name, what string) (note.Signer, string, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, "", err
	}
	text, _, err := keyfile.LoadOrCreate(path, func() (string, error) {
		skey, _, err := note.GenerateKey(rand.Reader, name)
		return skey, err
	})
	if err != nil {
		return nil, "", fmt.Errorf("%s %s: %w", what, path, err)
	}
	skey := strings.TrimSpace(text)
	s, err := fnote.NewSignerForCosignatureV1(skey)
	if err != nil {
		return nil, "", fmt.Errorf("%s %s: %w", what, path, err)
	}
	vk, err := log.VerifierKey(skey)
	if err != nil {
		return nil, "", fmt.Errorf("%s %s: %w", what, path, err)
	}
	cvk, err := fnote.VKeyToCosignatureV1(vk)
	if err != nil {
		return nil, "", fmt.Errorf("%s %s: %w", what, path, err)
	}
	return s, cvk, nil
}

func storeDir(cfg *Config) string { return filepath.Join(cfg.DataDir, "state") }

// admin runs an operator action on the store (the daemon must be
// stopped: the store is locked while it runs).
func admin(cfg *Config, cmd, origin string) error {
	found := false
	for _, l := range cfg.Logs {
		found = found || l.Origin == origin
	}
	if !found {
		return fmt.Errorf("origin %q is not configured", origin)
	}
	st, err := auditor.OpenStore(storeDir(cfg))
	if err != nil {
		return fmt.Errorf("%w (is ktauditor running?)", err)
	}
	defer st.Close()
	switch cmd {
	case "unfreeze":
		ok, err := st.Unfreeze(origin)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("%s was not frozen", origin)
		}
		fmt.Printf("%s: cosigning resumes at the next start; its evidence is kept\n", origin)
	case "reset-witness":
		if err := st.ResetWitness(origin); err != nil {
			return err
		}
		fmt.Printf("%s: the last cosigned checkpoint is forgotten\n", origin)
	}
	return nil
}

// run serves until ctx is done, then shuts down gracefully. When ready is
// non-nil, the bound addresses are sent on it once the listeners accept.
func run(ctx context.Context, cfg *Config, logger *slog.Logger, ready chan<- addrs) (err error) {
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return err
	}
	signer, vkey, err := loadKey(cfg)
	if err != nil {
		return err
	}
	var auditSigner note.Signer
	auditVKey := ""
	if cfg.AuditKey != "" {
		if auditSigner, auditVKey, err = loadAuditKey(cfg); err != nil {
			return err
		}
	}
	st, err := auditor.OpenStore(storeDir(cfg))
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, st.Close()) }()
	m := newMetrics()
	hc := &http.Client{Timeout: 30 * time.Second}
	acfg := auditor.Config{
		Store: st, AuditSigner: auditSigner, AuditWait: cfg.AuditWait,
		PollInterval: cfg.PollInterval, GossipInterval: cfg.GossipInterval, ProgressInterval: cfg.ProgressInterval,
		HTTPClient: hc, EvidenceDir: cfg.EvidenceDir, WebhookURL: cfg.WebhookURL, MaxBodyBytes: cfg.MaxBodyBytes,
		Metrics: m, Logger: logger,
	}
	if cfg.Witness {
		acfg.Cosigner = signer
	}
	for _, l := range cfg.Logs {
		lc := auditor.LogConfig{Origin: l.Origin, VKey: l.VKey, Heartbeat: auditor.DefaultHeartbeat}
		if l.Heartbeat != nil {
			lc.Heartbeat = *l.Heartbeat
		}
		if l.WitnessPolicyFile != "" {
			if lc.WitnessPolicy, err = witness.ReadPolicyFile(l.WitnessPolicyFile); err != nil {
				return err
			}
			lc.Skew = l.Skew
		}
		if l.URL != "" {
			lc.RecoveryKey, _ = parseRecoveryKey(l.RecoveryKey) // validated
			lc.Reader = logapi.NewClient(l.URL, hc)
		}
		acfg.Logs = append(acfg.Logs, lc)
	}
	for _, p := range cfg.Peers {
		acfg.Peers = append(acfg.Peers, auditor.Peer{Name: p.Name, URL: p.URL})
	}
	a, err := auditor.New(acfg)
	if err != nil {
		return err
	}
	logger.Info("ktauditor starting", "cosignature_vkey", vkey, "audit_vkey", auditVKey, "logs", len(cfg.Logs), "peers", len(cfg.Peers), "witness", cfg.Witness)

	var bound addrs
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", cfg.Listen, err)
	}
	bound.HTTP = ln.Addr().String()
	srv := &http.Server{Handler: a.Handler(), ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute}
	var msrv *http.Server
	var mln net.Listener
	if cfg.MetricsListen != "" {
		mln, err = net.Listen("tcp", cfg.MetricsListen)
		if err != nil {
			ln.Close()
			return fmt.Errorf("listen %s: %w", cfg.MetricsListen, err)
		}
		bound.Metrics = mln.Addr().String()
		msrv = ops.MetricsServer(m.reg, cfg.MetricsListen, logger)
	}

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return a.Run(gctx) })
	g.Go(func() error { return ops.Serve(srv, ln) })
	if msrv != nil {
		g.Go(func() error { return ops.Serve(msrv, mln) })
	}
	g.Go(func() error {
		<-gctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
		defer cancel()
		err := srv.Shutdown(sctx)
		if msrv != nil {
			err = errors.Join(err, msrv.Shutdown(sctx))
		}
		return err
	})
	logger.Info("serving", "http", bound.HTTP, "metrics", bound.Metrics)
	if ready != nil {
		ready <- bound
	}
	return g.Wait()
}
