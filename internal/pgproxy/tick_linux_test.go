package pgproxy

import (
	"testing"
	"time"
)

func TestTickFor(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want time.Duration
	}{
		{"defaults", Config{QueryWaitTimeout: 30 * time.Second, ReservePoolSize: 5, ReservePoolTimeout: 3 * time.Second}, tickEvery},
		{"no timeouts", Config{}, tickEvery},
		{"short reserve_pool_timeout", Config{QueryWaitTimeout: 30 * time.Second, ReservePoolSize: 5, ReservePoolTimeout: 20 * time.Millisecond}, 10 * time.Millisecond},
		{"reserve_pool_timeout without a reserve pool", Config{ReservePoolTimeout: 20 * time.Millisecond}, tickEvery},
		{"short query_wait_timeout", Config{QueryWaitTimeout: 60 * time.Millisecond}, 30 * time.Millisecond},
		{"the finest tick", Config{QueryWaitTimeout: time.Millisecond}, time.Millisecond},
	} {
		if got := tickFor(&tc.cfg); got != tc.want {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
	}
}
