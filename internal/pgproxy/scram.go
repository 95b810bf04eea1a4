// Package pgproxy is the PostgreSQL ambassador. This file is SCRAM-SHA-256
// (RFC 5802, RFC 7677) for both directions: as a client logging into a
// PostgreSQL server, and as a server verifying an application against a
// stored verifier ("SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>",
// PostgreSQL's pg_authid format).
package pgproxy

import (
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

const scramMechanism = "SCRAM-SHA-256"

// maxSCRAMIterations caps the iteration count a server may ask attache to
// derive a key with (PBKDF2, whose cost grows with the count): 244 times
// PostgreSQL's default scram_iterations (4096), about a second of one CPU
// at most per server login. A server asking for more (hostile or
// misconfigured) is refused rather than let pin a CPU. pgx allows up to
// 10,000,000; libpq does not cap it.
const maxSCRAMIterations = 1_000_000

func hmacSHA256(key, msg []byte) []byte {
	h := hmac.New(sha256.New, key)
	h.Write(msg)
	return h.Sum(nil)
}

func xorBytes(a, b []byte) []byte {
	out := make([]byte, len(a))
	for i := range a {
		out[i] = a[i] ^ b[i]
	}
	return out
}

func nonce() string {
	b := make([]byte, 18)
	rand.Read(b)
	return base64.RawStdEncoding.EncodeToString(b)
}

// attrs parses "k=v,k=v" SCRAM attributes.
func attrs(s string) map[byte]string {
	m := map[byte]string{}
	for _, part := range strings.Split(s, ",") {
		if len(part) >= 2 && part[1] == '=' {
			m[part[0]] = part[2:]
		}
	}
	return m
}

// scramClient is the client side of one SCRAM-SHA-256 exchange.
type scramClient struct {
	password    string
	keys        *scramKeys // instead of password: SCRAM pass-through
	clientNonce string
	firstBare   string
	serverSig   []byte
}

// scramKeys is what SCRAM pass-through logs into a server with, as
// pgbouncer does: the ClientKey recovered from a client's proof
// (ClientProof XOR ClientSignature) and the stored verifier it matched,
// whose salt, iterations and ServerKey the server must share.
type scramKeys struct {
	clientKey []byte
	v         *Verifier
}

func newSCRAMClient(password string) *scramClient {
	c := &scramClient{password: password, clientNonce: nonce()}
	// PostgreSQL ignores the SCRAM user name (it has the startup one).
	c.firstBare = "n=,r=" + c.clientNonce
	return c
}

// first is the client-first-message.
func (c *scramClient) first() []byte { return []byte("n,," + c.firstBare) }

// final answers the server-first-message with the client-final-message.
func (c *scramClient) final(serverFirst []byte) ([]byte, error) {
	a := attrs(string(serverFirst))
	r, s, i := a['r'], a['s'], a['i']
	if !strings.HasPrefix(r, c.clientNonce) || len(r) == len(c.clientNonce) {
		return nil, errors.New("SCRAM: server nonce does not extend ours")
	}
	salt, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, errors.New("SCRAM: bad salt")
	}
	iter, err := strconv.Atoi(i)
	if err != nil || iter < 1 {
		return nil, errors.New("SCRAM: bad iteration count")
	}
	if iter > maxSCRAMIterations {
		return nil, fmt.Errorf("SCRAM: the server asks for %d iterations, more than attache does (%d)", iter, maxSCRAMIterations)
	}
	var clientKey, serverKey []byte
	if k := c.keys; k != nil {
		if iter != k.v.Iter || !hmac.Equal(salt, k.v.Salt) {
			return nil, errors.New("SCRAM pass-through: the server's SCRAM secret for this user has another salt or iteration count than the one attache holds (put the server's own verifier, from pg_authid, in the users file)")
		}
		clientKey, serverKey = k.clientKey, k.v.ServerKey
	} else {
		salted, err := pbkdf2.Key(sha256.New, c.password, salt, iter, 32)
		if err != nil {
			return nil, err
		}
		clientKey = hmacSHA256(salted, []byte("Client Key"))
		serverKey = hmacSHA256(salted, []byte("Server Key"))
	}
	storedKey := sha256.Sum256(clientKey)
	withoutProof := "c=biws,r=" + r
	authMsg := c.firstBare + "," + string(serverFirst) + "," + withoutProof
	proof := xorBytes(clientKey, hmacSHA256(storedKey[:], []byte(authMsg)))
	c.serverSig = hmacSHA256(serverKey, []byte(authMsg))
	return []byte(withoutProof + ",p=" + base64.StdEncoding.EncodeToString(proof)), nil
}

// verify checks the server-final-message.
func (c *scramClient) verify(serverFinal []byte) error {
	v := attrs(string(serverFinal))['v']
	sig, err := base64.StdEncoding.DecodeString(v)
	if err != nil || !hmac.Equal(sig, c.serverSig) {
		return errors.New("SCRAM: the server's signature does not match (wrong server or man in the middle)")
	}
	return nil
}

// Verifier is a stored SCRAM-SHA-256 secret.
type Verifier struct {
	Iter                 int
	Salt                 []byte
	StoredKey, ServerKey []byte
}

// ParseVerifier parses PostgreSQL's "SCRAM-SHA-256$iter:salt$stored:server".
func ParseVerifier(s string) (*Verifier, error) {
	rest, ok := strings.CutPrefix(s, scramMechanism+"$")
	if !ok {
		return nil, errors.New("not a SCRAM-SHA-256 secret")
	}
	params, keys, ok := strings.Cut(rest, "$")
	iterS, saltS, ok1 := strings.Cut(params, ":")
	storedS, serverS, ok2 := strings.Cut(keys, ":")
	if !ok || !ok1 || !ok2 {
		return nil, errors.New("malformed SCRAM-SHA-256 secret")
	}
	v := &Verifier{}
	var err error
	if v.Iter, err = strconv.Atoi(iterS); err != nil || v.Iter < 1 {
		return nil, errors.New("malformed SCRAM-SHA-256 secret: iterations")
	}
	if v.Salt, err = base64.StdEncoding.DecodeString(saltS); err != nil {
		return nil, errors.New("malformed SCRAM-SHA-256 secret: salt")
	}
	if v.StoredKey, err = base64.StdEncoding.DecodeString(storedS); err != nil || len(v.StoredKey) != 32 {
		return nil, errors.New("malformed SCRAM-SHA-256 secret: stored key")
	}
	if v.ServerKey, err = base64.StdEncoding.DecodeString(serverS); err != nil || len(v.ServerKey) != 32 {
		return nil, errors.New("malformed SCRAM-SHA-256 secret: server key")
	}
	return v, nil
}

// NewVerifier derives a verifier from a plain password (for users files
// that hold plain passwords).
func NewVerifier(password string, iter int) *Verifier {
	salt := make([]byte, 16)
	rand.Read(salt)
	salted, _ := pbkdf2.Key(sha256.New, password, salt, iter, 32)
	stored := sha256.Sum256(hmacSHA256(salted, []byte("Client Key")))
	return &Verifier{Iter: iter, Salt: salt, StoredKey: stored[:], ServerKey: hmacSHA256(salted, []byte("Server Key"))}
}

// String renders the verifier in PostgreSQL's format.
func (v *Verifier) String() string {
	e := base64.StdEncoding.EncodeToString
	return fmt.Sprintf("%s$%d:%s$%s:%s", scramMechanism, v.Iter, e(v.Salt), e(v.StoredKey), e(v.ServerKey))
}

// scramServer is the server side of one exchange.
type scramServer struct {
	v           *Verifier
	clientKey   []byte // recovered from the client's proof once final succeeded
	clientBare  string
	serverFirst string
	nonce       string
}

// first answers the client-first-message.
func (s *scramServer) first(clientFirst []byte) ([]byte, error) {
	msg := string(clientFirst)
	// gs2 header: "n,," or "y,," (no channel binding from us); "p=" is
	// channel binding, which attache does not offer.
	if !strings.HasPrefix(msg, "n,") && !strings.HasPrefix(msg, "y,") {
		return nil, errors.New("SCRAM: unsupported channel binding")
	}
	i := strings.Index(msg[2:], ",")
	if i < 0 {
		return nil, errors.New("SCRAM: malformed client-first-message")
	}
	s.clientBare = msg[2+i+1:]
	r := attrs(s.clientBare)['r']
	if r == "" {
		return nil, errors.New("SCRAM: client nonce missing")
	}
	s.nonce = r + nonce()
	s.serverFirst = fmt.Sprintf("r=%s,s=%s,i=%d", s.nonce, base64.StdEncoding.EncodeToString(s.v.Salt), s.v.Iter)
	return []byte(s.serverFirst), nil
}

// final verifies the client-final-message and returns the server-final.
func (s *scramServer) final(clientFinal []byte) ([]byte, error) {
	msg := string(clientFinal)
	i := strings.LastIndex(msg, ",p=")
	if i < 0 {
		return nil, errors.New("SCRAM: proof missing")
	}
	withoutProof := msg[:i]
	a := attrs(withoutProof)
	if a['r'] != s.nonce {
		return nil, errors.New("SCRAM: nonce mismatch")
	}
	if a['c'] != "biws" && a['c'] != "eSws" { // "n,," or "y,," base64
		return nil, errors.New("SCRAM: unsupported channel binding")
	}
	proof, err := base64.StdEncoding.DecodeString(msg[i+3:])
	if err != nil || len(proof) != 32 {
		return nil, errors.New("SCRAM: malformed proof")
	}
	authMsg := s.clientBare + "," + s.serverFirst + "," + withoutProof
	clientSig := hmacSHA256(s.v.StoredKey, []byte(authMsg))
	clientKey := xorBytes(proof, clientSig)
	stored := sha256.Sum256(clientKey)
	if subtle.ConstantTimeCompare(stored[:], s.v.StoredKey) != 1 {
		return nil, errWrongPassword
	}
	s.clientKey = clientKey
	return []byte("v=" + base64.StdEncoding.EncodeToString(hmacSHA256(s.v.ServerKey, []byte(authMsg)))), nil
}

var errWrongPassword = errors.New("password authentication failed")
