package httpproxy

import (
	"fmt"
	"net/http"
	"net/netip"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/attache-proxy/attache/internal/ratelimit"
)

// Rate limits. A route's limit (routeLimit) is checked when the request
// has been routed, before anything is sent upstream: on the engine and the
// goroutine fast path as on net/http, with the same key, since a token
// bucket costs a lock and a few float operations. A route whose limit
// needs what only net/http has (a JWT claim from the request's context,
// RateLimit fields added to the upstream's response) is served by
// net/http. A cluster's limit (UpstreamLimit) may make a request wait for
// its token, which only a goroutine of its own can do while noticing the
// client go away: routes to such a cluster are served by net/http.

// Kinds of rate limit key.
const (
	limitNone    = iota // one bucket for the route
	limitHeader         // a header's value
	limitClaim          // a verified JWT claim
	limitEndUser        // the end user's address
)

// routeLimit is a compiled RateLimit.
type routeLimit struct {
	l      *ratelimit.Limiter
	cfg    RateLimit
	by     int
	header string // limitHeader: as http.Header keys it
	claim  string
	trust  trust // limitEndUser
	always bool  // the RateLimit fields go on every response, not only on 429s
	name   string
	policy string // the RateLimit-Policy value
	// allowed and limited count decisions (Observer.RateLimit); nil: not counted.
	allowed, limited func()
}

func compileLimit(route string, rl *RateLimit) *routeLimit {
	if rl == nil {
		return nil
	}
	p := ratelimit.PolicyOf(rl.Requests, rl.Per.D(), rl.Burst)
	l := &routeLimit{cfg: *rl, always: rl.Headers == "always", name: sfString(route)}
	l.policy = l.name + ";q=" + strconv.Itoa(rl.Requests) + ";w=" + strconv.FormatInt(int64(rl.Per.D()/time.Second), 10)
	if k := rl.Key; k != nil {
		switch {
		case k.Header != "":
			l.by, l.header = limitHeader, http.CanonicalHeaderKey(k.Header)
		case k.Claim != "":
			l.by, l.claim = limitClaim, k.Claim
		case k.EndUser:
			l.by = limitEndUser
			l.trust = trust{header: http.CanonicalHeaderKey(k.ForwardedHeader), forwarded: strings.EqualFold(k.ForwardedHeader, "forwarded")}
			for _, c := range k.TrustedProxies {
				l.trust.proxies = append(l.trust.proxies, c.Prefix())
			}
		}
	}
	l.l = ratelimit.NewLimiter(p, max(rl.MaxKeys, 1))
	return l
}

// fast reports whether the engine and the goroutine fast path may serve
// the route's limit.
func (l *routeLimit) fast() bool { return l == nil || !l.always && l.by != limitClaim }

// carryLimits gives the routes of t that kept their name and rate limit
// the buckets of prev's, so that a reload does not hand every client a
// full bucket again.
func carryLimits(t, prev *Table) {
	if prev == nil {
		return
	}
	for _, r := range t.Routes {
		if r.limit == nil {
			continue
		}
		for _, o := range prev.Routes {
			if o.Name == r.Name && o.limit != nil && reflect.DeepEqual(o.limit.cfg, r.limit.cfg) {
				r.limit.l = o.limit.l
				break
			}
		}
	}
}

// take decides at now whether a request whose key is key (keyed false:
// none) may go, and counts the decision.
func (l *routeLimit) take(key uint64, keyed bool, now int64) ratelimit.Decision {
	var d ratelimit.Decision
	if keyed {
		d = l.l.TakeKey(key, now)
	} else {
		d = l.l.Take(now)
	}
	if c := l.allowed; d.OK && c != nil {
		c()
	} else if c := l.limited; !d.OK && c != nil {
		c()
	}
	return d
}

// decide is take for a request on the net/http path.
func (l *routeLimit) decide(r *http.Request, now int64) ratelimit.Decision {
	switch l.by {
	case limitHeader:
		if v := r.Header.Get(l.header); v != "" {
			return l.take(l.l.Key(v), true, now)
		}
	case limitClaim:
		if v, ok := claimKey(claimsOf(r), l.claim); ok {
			return l.take(l.l.Key(v), true, now)
		}
	case limitEndUser:
		if k, ok := l.endUserKey(peerAddr(r.RemoteAddr), r.Header.Values(l.trust.header)); ok {
			return l.take(k, true, now)
		}
	}
	return l.take(0, false, now)
}

// decideHead is decide for a request on the engine or the goroutine fast
// path, from the application's address peer.
func (l *routeLimit) decideHead(r *reqHead, peer netip.Addr, now int64) ratelimit.Decision {
	switch l.by {
	case limitHeader:
		if v := r.Get(l.header); v != "" {
			return l.take(l.l.Key(v), true, now)
		}
	case limitEndUser:
		var buf [4]string
		lines := buf[:0]
		for i := range r.fields {
			if strings.EqualFold(r.fields[i].name, l.trust.header) {
				lines = append(lines, r.fields[i].value)
			}
		}
		if k, ok := l.endUserKey(peer, lines); ok {
			return l.take(k, true, now)
		}
	}
	return l.take(0, false, now)
}

// endUserKey is the key of the end user named by the forwarded header's
// lines from peer; false when there is none or it is loopback (the
// application itself: no end user, as for sticky splits).
func (l *routeLimit) endUserKey(peer netip.Addr, lines []string) (uint64, bool) {
	a := l.trust.endUser(peer, lines)
	if !a.IsValid() || a.IsLoopback() {
		return 0, false
	}
	b := a.As16()
	return l.l.KeyBytes(b[:]), true
}

// claimKey is the key of a claim, found as forward_claims finds it (a
// dotted name reaches into nested objects): a string as it is, a number
// or a boolean in JSON's text; false for a claim that is missing, empty,
// or an array or object.
func claimKey(claims map[string]any, name string) (string, bool) {
	v, _ := lookupClaim(claims, name)
	switch v := v.(type) {
	case string:
		return v, v != ""
	case float64:
		return strconv.FormatFloat(v, 'g', -1, 64), true
	case bool:
		return strconv.FormatBool(v), true
	case interface{ String() string }: // json.Number
		s := v.String()
		return s, s != ""
	}
	return "", false
}

// rateLimitValue is the RateLimit field of decision d: the policy's name,
// the requests left (r) and the seconds until the bucket is full (t).
func (l *routeLimit) rateLimitValue(d ratelimit.Decision) string {
	b := make([]byte, 0, len(l.name)+24)
	return string(l.appendRateLimit(b, d))
}

func (l *routeLimit) appendRateLimit(b []byte, d ratelimit.Decision) []byte {
	b = append(b, l.name...)
	b = append(b, ";r="...)
	b = strconv.AppendInt(b, int64(d.Remaining), 10)
	b = append(b, ";t="...)
	return strconv.AppendInt(b, ratelimit.Seconds(d.Reset), 10)
}

// retryAfter is the Retry-After of a refused request: whole seconds,
// rounded up, at least 1.
func retryAfter(d time.Duration) int64 { return max(ratelimit.Seconds(d), 1) }

// sfString is s as a structured-field String (RFC 9651 3.3.3): quoted,
// with \ and " escaped; bytes outside printable ASCII become '?'.
func sfString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < 0x20 || c > 0x7e:
			b.WriteByte('?')
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// limitMessage is the body of a route's 429.
func limitMessage(route string) string { return "attache: rate limited (route " + route + ")\n" }

// Reasons of attache's 429s.
const (
	reasonLimited         = "rate limited"
	reasonUpstreamLimited = "upstream rate limited"
)

// appendLimited appends the 429 of a request over its route's limit, in
// the fast paths' wire form: Retry-After and the RateLimit fields.
func (l *routeLimit) appendLimited(b []byte, d ratelimit.Decision, closeAfter, http10, head bool, msg string) []byte {
	b = append(b, "HTTP/1.1 429 Too Many Requests\r\nContent-Type: text/plain; charset=utf-8\r\nX-Content-Type-Options: nosniff\r\nX-Attache-Reason: "+reasonLimited+"\r\nRetry-After: "...)
	b = strconv.AppendInt(b, retryAfter(d.RetryAfter), 10)
	b = append(b, "\r\nRateLimit-Policy: "...)
	b = append(b, l.policy...)
	b = append(b, "\r\nRateLimit: "...)
	b = l.appendRateLimit(b, d)
	b = appendHeadEnd(b, int64(len(msg)), closeAfter, http10)
	if !head {
		b = append(b, msg...)
	}
	return b
}

// limitedHTTP answers a request over its route's limit on the net/http
// path; false when the request may go (with the RateLimit fields set on
// the response when the route sends them always).
func (h *Handler) limitedHTTP(w http.ResponseWriter, r *http.Request, x *exchange) bool {
	l := x.route.limit
	d := l.decide(r, time.Now().UnixNano())
	if d.OK {
		if l.always {
			w.Header().Set("RateLimit-Policy", l.policy)
			w.Header().Set("RateLimit", l.rateLimitValue(d))
		}
		return false
	}
	x.reason = reasonLimited
	hd := w.Header()
	hd.Set("X-Attache-Reason", reasonLimited)
	hd.Set("Retry-After", strconv.FormatInt(retryAfter(d.RetryAfter), 10))
	hd.Set("RateLimit-Policy", l.policy)
	hd.Set("RateLimit", l.rateLimitValue(d))
	hd.Set("Content-Type", "text/plain; charset=utf-8")
	hd.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusTooManyRequests)
	if r.Method != http.MethodHead {
		w.Write([]byte(limitMessage(x.route.Name)))
	}
	return true
}

// rateLimited answers a request over its route's limit on the goroutine
// fast path, with the status sent; false when it may go.
func (fc *fastConn) rateLimited(route *compiledRoute) (int, bool) {
	l := route.limit
	d := l.decideHead(&fc.req, fc.peer, fc.start.UnixNano())
	if d.OK {
		return 0, false
	}
	fc.x.reason = reasonLimited
	msg := limitMessage(route.Name)
	head := fc.req.method == http.MethodHead
	fc.bw.Write(l.appendLimited(fc.bw.AvailableBuffer(), d, fc.closeAfter, fc.req.http10, head, msg))
	if !head {
		fc.bytesOut += int64(len(msg))
	}
	return http.StatusTooManyRequests, true
}

// UpstreamLimit is a cluster's rate_limit: the queue of its tokens, and
// the metrics of its decisions (any may be nil).
type UpstreamLimit struct {
	Queue  *ratelimit.Queue
	Config UpstreamRateLimit
	// Allowed, Queued (a token after a wait), Limited and Cancelled (the
	// client went away while waiting) count requests; Waited observes
	// the wait of a queued request.
	Allowed, Queued, Limited, Cancelled func()
	Waited                              func(time.Duration)
}

func count(f func()) {
	if f != nil {
		f()
	}
}

// upstreamLimited takes a token of the cluster's rate limit for a request
// on the net/http path about to go upstream (a cache hit takes none),
// waiting for it when the cluster's queue allows, within the route's
// timeout; it answers the request (answered) when there is none, and
// otherwise says how long the request waited. A client that goes away
// while it waits leaves the queue (its token goes back); it gets no
// answer (499 in metrics and the access log).
func (h *Handler) upstreamLimited(w http.ResponseWriter, r *http.Request, x *exchange) (waited time.Duration, answered bool) {
	u := x.cluster.opts.RateLimit
	res, ok, after := u.Queue.Reserve(time.Now().UnixNano(), x.route.timeout)
	if ok && res.Delay == 0 {
		count(u.Allowed)
		return 0, false
	}
	if ok {
		if res.Wait(r.Context()) {
			count(u.Queued)
			if u.Waited != nil {
				u.Waited(res.Delay)
			}
			return res.Delay, false
		}
		count(u.Cancelled)
		x.reason = "client closed request"
		w.WriteHeader(499) // nobody reads it: for the metrics
		return 0, true
	}
	count(u.Limited)
	x.reason = reasonUpstreamLimited
	hd := w.Header()
	hd.Set("X-Attache-Reason", reasonUpstreamLimited)
	hd.Set("Retry-After", strconv.FormatInt(retryAfter(after), 10))
	hd.Set("Content-Type", "text/plain; charset=utf-8")
	hd.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusTooManyRequests)
	if r.Method != http.MethodHead {
		fmt.Fprintf(w, "attache: upstream rate limited (cluster %s)\n", x.cluster.Name())
	}
	return 0, true
}

// rateLimitStatus is a route's rate limit in a listener's /status.
type rateLimitStatus struct {
	Route     string `json:"route"`
	Requests  int    `json:"requests"`
	Per       string `json:"per"`
	Burst     int    `json:"burst"`
	Key       string `json:"key"` // none, header:<name>, claim:<name>, end_user
	MaxKeys   int    `json:"max_keys,omitempty"`
	Keys      int    `json:"keys"` // buckets kept now
	Evictions uint64 `json:"evictions"`
	Headers   string `json:"headers"`
}

func (l *routeLimit) status(route string) rateLimitStatus {
	s := rateLimitStatus{Route: route, Requests: l.cfg.Requests, Per: l.cfg.Per.D().String(), Burst: l.cfg.Burst,
		Key: "none", Headers: l.cfg.Headers, Keys: l.l.Keys(), Evictions: l.l.Evictions()}
	switch l.by {
	case limitHeader:
		s.Key = "header:" + strings.ToLower(l.header)
	case limitClaim:
		s.Key = "claim:" + l.claim
	case limitEndUser:
		s.Key = "end_user"
	}
	if l.by != limitNone {
		s.MaxKeys = l.cfg.MaxKeys
	}
	return s
}

// upstreamLimitStatus is a cluster's rate limit in /status.
type upstreamLimitStatus struct {
	Requests     int    `json:"requests"`
	Per          string `json:"per"`
	Burst        int    `json:"burst"`
	QueueMax     int    `json:"queue_max"` // 0: no queue, refused at once
	QueueTimeout string `json:"queue_timeout"`
	Waiting      int    `json:"waiting"`
}

func (u *UpstreamLimit) status() upstreamLimitStatus {
	n, wait := u.Queue.Limits()
	return upstreamLimitStatus{Requests: u.Config.Requests, Per: u.Config.Per.D().String(), Burst: u.Config.Burst,
		QueueMax: n, QueueTimeout: wait.String(), Waiting: u.Queue.Waiting()}
}
