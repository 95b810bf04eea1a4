package health

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/attache-proxy/attache/internal/upstream"
)

// ReplicationChecker is a Checker that also learns, in the same check, the
// endpoint's replication role and lag. Round stores them on the endpoint.
type ReplicationChecker interface {
	Checker
	CheckReplication(ctx context.Context, addr string) (upstream.Replication, error)
}

var _ ReplicationChecker = (*Postgres)(nil)

// PGLogin logs in on conn (authentication included) and returns the
// session's frontend, ready for a query.
type PGLogin func(conn net.Conn) (*pgproto3.Frontend, error)

// Postgres is the postgres health check: it logs in with Login over a
// connection made by Dial and asks, in one query, whether the server is in
// recovery and how far its replay is behind (see docs/postgres-failover.md).
// It passes when the query answers. Safe for concurrent use.
type Postgres struct {
	Dial  Dialer
	Login PGLogin
}

// replicationQuery is the one query of a check. Its columns:
//
//	in_recovery  pg_is_in_recovery(): true on a standby
//	receiving    a WAL receiver process is running (its pid is visible to
//	             any role; the other columns of pg_stat_wal_receiver need
//	             pg_read_all_stats)
//	caught_up    everything received has been replayed; NULL on a primary
//	             and before anything was received
//	replay_age   seconds since the commit time of the last replayed
//	             transaction; NULL when none was replayed since start-up
const replicationQuery = `SELECT pg_is_in_recovery(),
 (SELECT pid FROM pg_stat_wal_receiver) IS NOT NULL,
 pg_last_wal_replay_lsn() >= pg_last_wal_receive_lsn(),
 extract(epoch FROM now() - pg_last_xact_replay_timestamp())`

// Check runs the check and discards what it learned.
func (p *Postgres) Check(ctx context.Context, addr string) error {
	_, err := p.CheckReplication(ctx, addr)
	return err
}

// CheckReplication logs in, runs replicationQuery, and closes the
// connection with Terminate.
func (p *Postgres) CheckReplication(ctx context.Context, addr string) (upstream.Replication, error) {
	conn, err := p.Dial(ctx, "tcp", addr)
	if err != nil {
		return upstream.Replication{}, err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	fe, err := p.Login(conn)
	if err != nil {
		return upstream.Replication{}, err
	}
	fe.Send(&pgproto3.Query{String: replicationQuery})
	if err := fe.Flush(); err != nil {
		return upstream.Replication{}, err
	}
	var row [][]byte
	for {
		msg, err := fe.Receive()
		if err != nil {
			return upstream.Replication{}, err
		}
		switch m := msg.(type) {
		case *pgproto3.DataRow:
			row = make([][]byte, len(m.Values))
			for i, v := range m.Values {
				if v != nil {
					row[i] = append([]byte{}, v...) // m is reused by the next Receive
				}
			}
		case *pgproto3.ErrorResponse:
			return upstream.Replication{}, fmt.Errorf("%s: %s (SQLSTATE %s)", m.Severity, m.Message, m.Code)
		case *pgproto3.ReadyForQuery:
			fe.Send(&pgproto3.Terminate{})
			fe.Flush()
			return parseReplication(row)
		}
	}
}

// parseReplication reads the text row of replicationQuery.
func parseReplication(row [][]byte) (upstream.Replication, error) {
	if len(row) != 4 {
		return upstream.Replication{}, fmt.Errorf("replication query: got %d columns, want 4", len(row))
	}
	inRecovery, err := pgBool(row[0])
	if err != nil || inRecovery == nil {
		return upstream.Replication{}, fmt.Errorf("replication query: pg_is_in_recovery() = %q", row[0])
	}
	receiving, err := pgBool(row[1])
	if err != nil || receiving == nil {
		return upstream.Replication{}, fmt.Errorf("replication query: wal receiver = %q", row[1])
	}
	caughtUp, err := pgBool(row[2])
	if err != nil {
		return upstream.Replication{}, fmt.Errorf("replication query: caught up = %q", row[2])
	}
	var age *time.Duration
	if row[3] != nil {
		s, err := strconv.ParseFloat(string(row[3]), 64)
		if err != nil || math.IsNaN(s) || math.IsInf(s, 0) {
			return upstream.Replication{}, fmt.Errorf("replication query: replay age = %q", row[3])
		}
		d := time.Duration(s * float64(time.Second))
		age = &d
	}
	return replicationState(*inRecovery, *receiving, caughtUp != nil && *caughtUp, age), nil
}

// replicationState decides an endpoint's role and lag from what its server
// reports:
//
//   - not in recovery: a primary, lag 0.
//   - a standby whose WAL receiver is running and that has replayed all it
//     received: lag 0. The primary streams its WAL as it writes it, so a
//     standby in this state is behind by no more than the network. The
//     replay timestamp alone would be wrong here: it is the commit time of
//     the last transaction replayed, and grows old while the primary is
//     idle, though the standby misses nothing.
//   - any other standby (replay behind what was received, replay paused, or
//     no WAL receiver: cut off from its primary): lag is the age of the
//     last replayed commit, an upper bound on how stale its data can be;
//     unknown when nothing was replayed since it started.
func replicationState(inRecovery, receiving, caughtUp bool, replayAge *time.Duration) upstream.Replication {
	switch {
	case !inRecovery:
		return upstream.Replication{Role: upstream.RolePrimary, LagKnown: true}
	case receiving && caughtUp:
		return upstream.Replication{Role: upstream.RoleStandby, LagKnown: true}
	case replayAge != nil:
		return upstream.Replication{Role: upstream.RoleStandby, Lag: max(*replayAge, 0), LagKnown: true}
	}
	return upstream.Replication{Role: upstream.RoleStandby}
}

// pgBool reads a text-format boolean; nil for NULL.
func pgBool(v []byte) (*bool, error) {
	if v == nil {
		return nil, nil
	}
	var b bool
	switch string(v) {
	case "t":
		b = true
	case "f":
	default:
		return nil, errors.New("not a boolean")
	}
	return &b, nil
}
