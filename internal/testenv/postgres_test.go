package testenv

import (
	"context"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5"
)

// TestPostgresHarness: a private server with SCRAM auth, reached by pgx.
func TestPostgresHarness(t *testing.T) {
	pg := Postgres(t)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, fmt.Sprintf("postgres://%s:%s@%s/postgres?sslmode=disable", pg.User, pg.Password, pg.Addr))
	if err != nil {
		t.Fatalf("pgx with SCRAM: %v", err)
	}
	defer conn.Close(ctx)
	var method string
	if err := conn.QueryRow(ctx, "SHOW password_encryption").Scan(&method); err != nil || method != "scram-sha-256" {
		t.Errorf("password_encryption: %q %v", method, err)
	}
	if _, err := pgx.Connect(ctx, fmt.Sprintf("postgres://%s:wrong@%s/postgres?sslmode=disable", pg.User, pg.Addr)); err == nil {
		t.Error("wrong password accepted")
	}
}
