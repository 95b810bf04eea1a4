package httpproxy

import (
	"context"
	"net/http"
)

// claimsKey is the context key of a request's verified JWT claims.
type claimsKey struct{}

// claimsOf returns the verified JWT claims of r (set by the route's JWT
// check), nil when the request carried none.
func claimsOf(r *http.Request) map[string]any {
	c, _ := r.Context().Value(claimsKey{}).(map[string]any)
	return c
}

// withClaims returns r carrying the verified claims c.
func withClaims(r *http.Request, c map[string]any) *http.Request {
	return r.WithContext(context.WithValue(r.Context(), claimsKey{}, c))
}
