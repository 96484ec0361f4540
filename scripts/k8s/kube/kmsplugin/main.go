// Command kms-plugin is atrest's KMS test plugin: a real gRPC KeyManagementService on a unix
// socket, v2 (k8s.io/kms/pkg/service) and the deprecated v1beta1 on the same socket, wrapping
// DEKs and seeds with a local AES-256-GCM key per key ID.
//
// The current key ID is read from --key-id-file on every Status and Encrypt, so a test rotates
// the "KMS key" by rewriting that file. Each key ID's wrapping key is created on first use in
// --state-dir and kept, so values wrapped under an older key ID still decrypt.
//
// Every v2 Decrypt appends one line to decrypts.log in --state-dir (the key ID and a short
// hash of the wrapped DEK or seed, nothing secret), so that a test can count the calls.
package main

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"net"

	kmsv1 "k8s.io/kms/apis/v1beta1"
	kmsv2 "k8s.io/kms/apis/v2"
	"k8s.io/kms/pkg/service"
)

type plugin struct {
	keyIDFile string
	stateDir  string
	mu        sync.Mutex
}

func (p *plugin) currentKeyID() (string, error) {
	b, err := os.ReadFile(p.keyIDFile)
	if err != nil {
		return "", err
	}
	id := strings.TrimSpace(string(b))
	if id == "" {
		return "", errors.New("key id file is empty")
	}
	return id, nil
}

// kek returns the wrapping key of a key ID, creating it on first use.
func (p *plugin) kek(keyID string, create bool) (cipher.AEAD, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	sum := sha256.Sum256([]byte(keyID))
	path := filepath.Join(p.stateDir, hex.EncodeToString(sum[:])+".key")
	key, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) && create {
		key = make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return nil, err
		}
		if err := os.WriteFile(path, key, 0o600); err != nil {
			return nil, err
		}
	} else if err != nil {
		return nil, fmt.Errorf("unknown key id %q: %w", keyID, err)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// logWrapped appends the hex of a DEK or seed the apiserver asked to wrap to deks.log (0600), so
// that atrest's test bed can search every output for it. Only a test plugin may do this: a real
// KMS never reveals what it wraps.
func (p *plugin) logWrapped(plain []byte) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	f, err := os.OpenFile(filepath.Join(p.stateDir, "deks.log"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(f, "%s\n", hex.EncodeToString(plain))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func (p *plugin) Encrypt(_ context.Context, _ string, data []byte) (*service.EncryptResponse, error) {
	if err := p.logWrapped(data); err != nil {
		return nil, err
	}
	id, err := p.currentKeyID()
	if err != nil {
		return nil, err
	}
	aead, err := p.kek(id, true)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	ct := aead.Seal(nonce, nonce, data, []byte(id))
	return &service.EncryptResponse{
		Ciphertext:  ct,
		KeyID:       id,
		Annotations: map[string][]byte{"kms.atrest.test": []byte("test-plugin")},
	}, nil
}

// logDecrypt appends "<key ID> <sha256 prefix of the wrapped DEK or seed>" to decrypts.log.
func (p *plugin) logDecrypt(keyID string, ciphertext []byte) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	f, err := os.OpenFile(filepath.Join(p.stateDir, "decrypts.log"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	sum := sha256.Sum256(ciphertext)
	_, err = fmt.Fprintf(f, "%s %s\n", keyID, hex.EncodeToString(sum[:8]))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func (p *plugin) Decrypt(_ context.Context, _ string, req *service.DecryptRequest) ([]byte, error) {
	if err := p.logDecrypt(req.KeyID, req.Ciphertext); err != nil {
		return nil, err
	}
	aead, err := p.kek(req.KeyID, false)
	if err != nil {
		return nil, err
	}
	n := aead.NonceSize()
	if len(req.Ciphertext) < n {
		return nil, errors.New("ciphertext too short")
	}
	return aead.Open(nil, req.Ciphertext[:n], req.Ciphertext[n:], []byte(req.KeyID))
}

func (p *plugin) Status(context.Context) (*service.StatusResponse, error) {
	id, err := p.currentKeyID()
	if err != nil {
		return nil, err
	}
	return &service.StatusResponse{Version: "v2", Healthz: "ok", KeyID: id}, nil
}

// v1 serves the deprecated v1beta1 API; its DEKs are wrapped under the key ID "v1".
type v1 struct {
	p *plugin
	kmsv1.UnimplementedKeyManagementServiceServer
}

func (s *v1) Version(context.Context, *kmsv1.VersionRequest) (*kmsv1.VersionResponse, error) {
	return &kmsv1.VersionResponse{Version: "v1beta1", RuntimeName: "atrest-test", RuntimeVersion: "0.1"}, nil
}

func (s *v1) Encrypt(_ context.Context, r *kmsv1.EncryptRequest) (*kmsv1.EncryptResponse, error) {
	if err := s.p.logWrapped(r.Plain); err != nil {
		return nil, err
	}
	aead, err := s.p.kek("v1", true)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	return &kmsv1.EncryptResponse{Cipher: aead.Seal(nonce, nonce, r.Plain, []byte("v1"))}, nil
}

func (s *v1) Decrypt(_ context.Context, r *kmsv1.DecryptRequest) (*kmsv1.DecryptResponse, error) {
	aead, err := s.p.kek("v1", false)
	if err != nil {
		return nil, err
	}
	n := aead.NonceSize()
	if len(r.Cipher) < n {
		return nil, errors.New("ciphertext too short")
	}
	plain, err := aead.Open(nil, r.Cipher[:n], r.Cipher[n:], []byte("v1"))
	if err != nil {
		return nil, err
	}
	return &kmsv1.DecryptResponse{Plain: plain}, nil
}

func main() {
	socket := flag.String("socket", "", "unix socket path to listen on")
	keyIDFile := flag.String("key-id-file", "", "file holding the current key ID")
	stateDir := flag.String("state-dir", "", "folder for the per-key-ID wrapping keys")
	flag.Parse()
	if *socket == "" || *keyIDFile == "" || *stateDir == "" {
		log.Fatal("--socket, --key-id-file and --state-dir are required")
	}
	if err := os.MkdirAll(*stateDir, 0o700); err != nil {
		log.Fatal(err)
	}
	_ = os.Remove(*socket)
	p := &plugin{keyIDFile: *keyIDFile, stateDir: *stateDir}
	ln, err := net.Listen("unix", *socket)
	if err != nil {
		log.Fatal(err)
	}
	gs := grpc.NewServer()
	kmsv2.RegisterKeyManagementServiceServer(gs, service.NewGRPCService(*socket, 10*time.Second, p))
	kmsv1.RegisterKeyManagementServiceServer(gs, &v1{p: p})
	go func() {
		ch := make(chan os.Signal, 1)
		signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM)
		<-ch
		gs.GracefulStop()
	}()
	if err := gs.Serve(ln); err != nil {
		log.Fatal(err)
	}
}
