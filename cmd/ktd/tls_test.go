package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/keytrans/kt/api/ktpb"
)

// testCA issues certificates for the TLS tests.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
	pem  []byte
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue returns a leaf certificate for 127.0.0.1 with the given usage.
func (ca *testCA) issue(t *testing.T, serial int64, usage x509.ExtKeyUsage) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func writePEM(t *testing.T, dir string, c tls.Certificate) (certFile, keyFile string) {
	t.Helper()
	kder, err := x509.MarshalECPrivateKey(c.PrivateKey.(*ecdsa.PrivateKey))
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate[0]}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

func TestDaemonTLS(t *testing.T) {
	serverCA := newTestCA(t, "server CA")
	clientCA := newTestCA(t, "operator CA")
	otherCA := newTestCA(t, "someone else")
	dir := t.TempDir()
	certFile, keyFile := writePEM(t, dir, serverCA.issue(t, 2, x509.ExtKeyUsageServerAuth))
	caFile := filepath.Join(dir, "operator-ca.pem")
	if err := os.WriteFile(caFile, clientCA.pem, 0o600); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, testConfig(t, filepath.Join(dir, "data"),
		"--tls-cert-file", certFile, "--tls-key-file", keyFile,
		"--operator-client-ca-file", caFile))

	// Public gRPC and HTTP over TLS.
	dial := func(addr string, certs ...tls.Certificate) *grpc.ClientConn {
		creds := credentials.NewTLS(&tls.Config{RootCAs: serverCA.pool, Certificates: certs, MinVersion: tls.VersionTLS12})
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn
	}
	dc := ktpb.NewDirectoryClient(dial(d.addrs.GRPC))
	if _, err := dc.GetParameters(t.Context(), &ktpb.GetParametersRequest{}); err != nil {
		t.Fatalf("GetParameters over TLS: %v", err)
	}
	waitEpoch(t, dc, 0)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: serverCA.pool, MinVersion: tls.VersionTLS12}}}
	resp, err := hc.Get("https://" + d.addrs.HTTP + "/healthz")
	if err != nil {
		t.Fatalf("/healthz over TLS: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/healthz over TLS: %d", resp.StatusCode)
	}
	// Plaintext HTTP to the TLS listener fails.
	if code, err := plainGet("http://" + d.addrs.HTTP + "/healthz"); err == nil && code == http.StatusOK {
		t.Error("plaintext HTTP served on the TLS listener")
	}

	// The operator listener requires a client certificate from its CA.
	recoverCode := func(conn *grpc.ClientConn) codes.Code {
		_, err := ktpb.NewOperatorClient(conn).Recover(t.Context(), &ktpb.ChangeRequest{})
		return status.Code(err)
	}
	if c := recoverCode(dial(d.addrs.Operator)); c != codes.Unavailable {
		t.Errorf("operator without a client certificate: %v, want Unavailable (handshake refused)", c)
	}
	if c := recoverCode(dial(d.addrs.Operator, otherCA.issue(t, 3, x509.ExtKeyUsageClientAuth))); c != codes.Unavailable {
		t.Errorf("operator with a certificate from another CA: %v, want Unavailable (handshake refused)", c)
	}
	if c := recoverCode(dial(d.addrs.Operator, clientCA.issue(t, 4, x509.ExtKeyUsageClientAuth))); c == codes.Unavailable || c == codes.Unimplemented || c == codes.OK {
		t.Errorf("operator with a valid client certificate: %v, want the directory's answer to an empty request", c)
	}
}

func plainGet(url string) (int, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}
