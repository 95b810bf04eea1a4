package pgproxy

import (
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/jackc/pgx/v5/pgproto3"
)

// ServerError is an ErrorResponse from a PostgreSQL server.
type ServerError struct{ *pgproto3.ErrorResponse }

func (e *ServerError) Error() string {
	return fmt.Sprintf("%s: %s (SQLSTATE %s)", e.Severity, e.Message, e.Code)
}

// Session is a logged-in server connection.
type Session struct {
	Conn   net.Conn
	FE     *pgproto3.Frontend
	Params map[string]string // ParameterStatus as the server reported them
	PID    uint32            // BackendKeyData, for cancel requests
	Secret []byte
}

// Login starts a session on conn as user on database, answering whatever
// authentication the server asks for: trust, cleartext, md5 or
// SCRAM-SHA-256 (whose server signature is verified). params are extra
// startup parameters (application_name, ...).
func Login(conn net.Conn, user, database, password string, params map[string]string) (*Session, error) {
	return login(conn, user, database, credentials{password: password}, params)
}

// credentials are what attache logs into a server with: a password (plain,
// or an md5 secret, which works for md5 servers only) or the keys of SCRAM
// pass-through (SCRAM servers only).
type credentials struct {
	password string
	scram    *scramKeys
}

// maxLoginMessage bounds one server message during a login.
const maxLoginMessage = 1 << 20

var errOnlySCRAMKey = errors.New("the server asks for a password, and attache holds only a SCRAM key for this user (SCRAM pass-through needs scram-sha-256 on the server)")

func login(conn net.Conn, user, database string, cred credentials, params map[string]string) (*Session, error) {
	password := cred.password
	fe := pgproto3.NewFrontend(conn, conn)
	// A server's messages before ReadyForQuery are small (libpq takes
	// authentication requests of up to 2000 bytes, other short messages
	// of up to 30000): a server announcing more is not waited for.
	fe.SetMaxBodyLen(maxLoginMessage)
	defer fe.SetMaxBodyLen(maxMessage)
	startup := &pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber, Parameters: map[string]string{"user": user, "database": database}}
	for k, v := range params {
		startup.Parameters[k] = v
	}
	fe.Send(startup)
	if err := fe.Flush(); err != nil {
		return nil, err
	}
	s := &Session{Conn: conn, FE: fe, Params: map[string]string{}}
	var sc *scramClient
	for {
		msg, err := fe.Receive()
		if err != nil {
			return nil, err
		}
		switch m := msg.(type) {
		case *pgproto3.AuthenticationOk:
		case *pgproto3.AuthenticationCleartextPassword:
			if cred.scram != nil {
				return nil, errOnlySCRAMKey
			}
			fe.Send(&pgproto3.PasswordMessage{Password: password})
		case *pgproto3.AuthenticationMD5Password:
			if cred.scram != nil {
				return nil, errOnlySCRAMKey
			}
			fe.Send(&pgproto3.PasswordMessage{Password: md5Password(user, password, m.Salt)})
		case *pgproto3.AuthenticationSASL:
			ok := false
			for _, mech := range m.AuthMechanisms {
				ok = ok || mech == scramMechanism
			}
			if !ok {
				return nil, fmt.Errorf("server offers SASL %v, not %s", m.AuthMechanisms, scramMechanism)
			}
			sc = newSCRAMClient(password)
			sc.keys = cred.scram
			fe.Send(&pgproto3.SASLInitialResponse{AuthMechanism: scramMechanism, Data: sc.first()})
		case *pgproto3.AuthenticationSASLContinue:
			if sc == nil {
				return nil, errors.New("SASLContinue without SASL")
			}
			final, err := sc.final(m.Data)
			if err != nil {
				return nil, err
			}
			fe.Send(&pgproto3.SASLResponse{Data: final})
		case *pgproto3.AuthenticationSASLFinal:
			if sc == nil {
				return nil, errors.New("SASLFinal without SASL")
			}
			if err := sc.verify(m.Data); err != nil {
				return nil, err
			}
		case *pgproto3.ParameterStatus:
			s.Params[m.Name] = m.Value
		case *pgproto3.BackendKeyData:
			s.PID, s.Secret = m.ProcessID, append([]byte(nil), m.SecretKey...)
		case *pgproto3.ReadyForQuery:
			return s, nil
		case *pgproto3.ErrorResponse:
			return nil, &ServerError{m}
		case *pgproto3.NoticeResponse:
		default:
			return nil, fmt.Errorf("unexpected %T during login", msg)
		}
		if err := fe.Flush(); err != nil {
			return nil, err
		}
	}
}

// md5Password is PostgreSQL's "md5" + md5(md5(password + user) + salt).
func md5Password(user, password string, salt [4]byte) string {
	if len(password) == 35 && strings.HasPrefix(password, "md5") {
		return md5Outer(password[3:], salt) // a stored md5 secret
	}
	inner := md5.Sum([]byte(password + user))
	return md5Outer(hex.EncodeToString(inner[:]), salt)
}

// md5Outer is "md5" + md5(hexInner + salt).
func md5Outer(hexInner string, salt [4]byte) string {
	outer := md5.Sum(append([]byte(hexInner), salt[:]...))
	return "md5" + hex.EncodeToString(outer[:])
}
