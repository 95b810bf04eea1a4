package pgproxy

import (
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/attache-proxy/attache/internal/userlist"
)

// serverCred is what a client authenticated with, kept by its pool to log
// into the server when the users file has no plain password for the user:
// an md5 secret (md5 servers only), or a SCRAM secret with the ClientKey
// recovered from the client's proof (SCRAM pass-through).
type serverCred struct {
	secret string
	scram  *scramKeys
}

// remember keeps cred for server logins, unless the pool already has
// credentials for the same secret (the first client's key is as good as
// any later one's).
func (pl *pool) remember(cred *serverCred) {
	if cred == nil {
		return
	}
	pl.mu.Lock()
	if pl.cred == nil || pl.cred.secret != cred.secret {
		pl.cred = cred
	}
	pl.mu.Unlock()
}

// credentials returns what to log into the server with: a plain password
// from the users file; else what a client of this pool authenticated with,
// as long as the users file has not changed the user's secret since.
func (pl *pool) credentials() (credentials, error) {
	secret, inFile := (*pl.p.users.Load())[pl.user]
	if inFile && userlist.KindOf(secret) == userlist.Plain {
		return credentials{password: secret}, nil
	}
	pl.mu.Lock()
	cred := pl.cred
	pl.mu.Unlock()
	if cred == nil || (inFile && cred.secret != secret) {
		if inFile && userlist.KindOf(secret) == userlist.MD5 {
			return credentials{password: secret}, nil
		}
		return credentials{}, fmt.Errorf("no server password for user %q: its secret is a SCRAM verifier, and no client has logged in with it yet to give attache the key (SCRAM pass-through)", pl.user)
	}
	if cred.scram != nil {
		return credentials{scram: cred.scram}, nil
	}
	return credentials{password: cred.secret}, nil
}

// lookup runs the auth query for user on a server connection of the pool
// of (db, auth user), as pgbouncer does, at each login of a user who is
// not in the users file. known is false when the query returns no row or
// a NULL secret.
func (p *Proxy) lookup(db, user string) (secret string, known bool, err error) {
	pl := p.pool(db, p.cfg.AuthUser)
	defer p.unref(pl)
	s, err := pl.acquire()
	if err != nil {
		return "", false, err
	}
	s.conn.SetDeadline(time.Now().Add(p.cfg.ServerConnectTimeout))
	secret, known, err = s.lookup(p.cfg.AuthQuery, user)
	s.conn.SetDeadline(time.Time{})
	pl.release(s, err == nil)
	return secret, known, err
}

// lookup runs the auth query with the extended protocol ($1 = user). A
// connection on which a client of the auth user changed parameters is
// reset first, so that the query sees the server's own search_path.
func (s *server) lookup(query, user string) (secret string, known bool, err error) {
	if len(s.applied) > 0 {
		if err := s.exec("RESET ALL"); err != nil {
			return "", false, err
		}
		s.clearApplied()
	}
	s.send(&pgproto3.Parse{Query: query})
	s.send(&pgproto3.Bind{Parameters: [][]byte{[]byte(user)}})
	s.send(&pgproto3.Execute{})
	s.send(&pgproto3.Sync{})
	if err := s.flush(); err != nil {
		return "", false, err
	}
	rows := 0
	for {
		msg, err := s.fe.Receive()
		if err != nil {
			return "", false, err
		}
		switch m := msg.(type) {
		case *pgproto3.DataRow:
			if rows++; rows > 1 {
				break
			}
			if len(m.Values) != 2 {
				return "", false, fmt.Errorf("auth query returned %d columns, want 2 (user, secret)", len(m.Values))
			}
			secret, known = string(m.Values[1]), m.Values[1] != nil
		case *pgproto3.ErrorResponse:
			e := *m // the connection is closed, not given back
			return "", false, fmt.Errorf("auth query: %w", &ServerError{&e})
		case *pgproto3.ParameterStatus:
			s.params[m.Name] = m.Value
		case *pgproto3.ReadyForQuery:
			if m.TxStatus != 'I' {
				return "", false, fmt.Errorf("auth query left the server in transaction status %c", m.TxStatus)
			}
			return secret, known, nil
		}
	}
}
