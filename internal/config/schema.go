package config

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Schema is one protocol's part of the configuration: its name (what
// listeners[].protocol says) and the types of its options, which the
// protocol's own package declares. Parse and Load take the schemas of the
// protocols they accept (internal/protocols lists them all); a listener
// naming a protocol without one is refused.
//
// A protocol's options sit under its name: listeners[].NAME holds what
// concerns its clients, clusters[].NAME what concerns its servers (see
// docs/configuration.md). They are decoded by the same strict decoder as
// the rest of the file (unknown fields, ${VAR}, line numbers), into the
// value ListenerOptions or ClusterOptions returns, and stored in
// Listener.Options or Cluster.Options under the protocol's name; the
// protocol reads them back with a type assertion.
//
// When the value implements Defaulter, its defaults are filled in after
// decoding; when it implements Validator, it is validated with the rest
// of the file, its problems reported with their path and line.
type Schema interface {
	Name() string
	// ListenerOptions returns a new, empty value for listeners[].NAME: a
	// pointer to a struct whose fields have yaml tags. nil: the protocol
	// has no listener options.
	ListenerOptions() any
	// ClusterOptions is ListenerOptions for clusters[].NAME. A cluster
	// has them when the file writes them or when a listener of the
	// protocol uses the cluster.
	ClusterOptions() any
}

// Mover is implemented by a Schema whose options took keys from
// elsewhere in the file. Moved maps each old key, as a path with empty
// indexes ("listeners[].password"), to where it is written now
// ("listeners[].redis.password", "clusters[].postgres.server_tls"). A
// file that still writes an old key is refused with an error that names
// the new path, indexes filled in: the listener's own, or for a
// clusters[] key the index of the cluster the listener names.
type Mover interface {
	Moved() map[string]string
}

// Ignorer is implemented by a protocol whose listeners leave cluster
// fields unread that the others read: a redis ring picks shards by key,
// not by balance. IgnoredClusterFields maps each field ("balance",
// "outlier_detection") to why; set on a cluster that only such listeners
// use, the field is refused with that reason. A protocol that ignores
// balance also reads endpoint weights whatever the balance.
type Ignorer interface {
	IgnoredClusterFields() map[string]string
}

// LatencyTimer is implemented by a protocol whose listeners time their
// requests or connections, which balance ewma needs; on a cluster that
// other listeners use, ewma is refused.
type LatencyTimer interface {
	TimesLatency()
}

// Defaulter is implemented by options with defaults. Default is called
// once the file is decoded; Check.Has tells a value written as zero from
// one not written.
type Defaulter interface {
	Default(c *Check)
}

// Validator is implemented by options with rules beyond their types.
// Validate reports every problem through c; it is called after every
// default of the file is filled in.
type Validator interface {
	Validate(c *Check)
}

// Check is where a protocol's options are in the file, and how their
// problems are reported: as an Error with the field's path and line.
// Paths are whole ("listeners[0].postgres.pool_size"), built from Path or
// Parent.
type Check struct {
	Config *Config
	// Path is the options' path: "listeners[0].postgres",
	// "clusters[1].redis".
	Path string
	// Parent is the path of the listener or cluster holding them.
	Parent string
	// Listener holds the options (listener options); nil for cluster
	// options.
	Listener *Listener
	// Cluster holds the options (cluster options), or is the listener's
	// cluster (nil when it names none or one that does not exist).
	Cluster *Cluster
	// ClusterPath is Cluster's path ("clusters[1]"), "" without one.
	ClusterPath string
	// UsedBy are the protocols of the listeners that use Cluster (routes
	// included); cluster options only.
	UsedBy map[string]bool
	v      *validator // nil while defaulting
}

// Has reports whether the file sets the field at path.
func (c *Check) Has(path string) bool { return c.Config.has(path) }

// LookupEnv reads the environment the file's ${VAR} references are
// resolved in.
func (c *Check) LookupEnv(name string) (string, bool) {
	if c.Config.env == nil {
		return "", false
	}
	return c.Config.env(name)
}

// Errorf reports a problem with the field at path.
func (c *Check) Errorf(path, format string, args ...any) { c.v.errorf(path, format, args...) }

// Error reports a problem given whole (with a Hint); its Line is filled
// in from its Path when 0.
func (c *Check) Error(e Error) {
	if e.Line == 0 {
		e.Line = c.Config.Line(e.Path)
	}
	c.v.errs = append(c.v.errs, e)
}

// OneOf checks that value is in set, suggesting the closest name if not.
func (c *Check) OneOf(path, what, value string, set []string) { c.v.oneOf(path, what, value, set) }

// File checks that a named file exists; "" is not checked. It reports
// whether the file is there.
func (c *Check) File(path, name string) bool { return c.v.file(path, name) }

// KeyPair checks a certificate and its key under path (cert_file,
// key_file): both or neither, readable and matching; required makes them
// mandatory.
func (c *Check) KeyPair(path, cert, key string, required bool) {
	c.v.keyPair(path, cert, key, required)
}

// MatchSAN checks a match_san list.
func (c *Check) MatchSAN(path string, m []SANMatch) { c.v.matchSAN(path, m) }

// CString checks a value sent as a NUL-terminated string of a wire
// protocol (PostgreSQL's startup parameters, queries, passwords); show
// quotes the value in the error, which a secret must not.
func (c *Check) CString(path, s string, show bool) { c.v.cString(path, s, show) }

// ServerName checks a TLS server name: a DNS name or an IP address.
func (c *Check) ServerName(path, s string) { c.v.serverName(path, s) }

// schemas are the protocols a Parse accepts, in the order given.
type schemas []Schema

func newSchemas(list []Schema) schemas { return schemas(list) }

func (s schemas) get(name string) Schema {
	for _, p := range s {
		if p.Name() == name {
			return p
		}
	}
	return nil
}

// names are the protocols' names.
func (s schemas) names() []string {
	out := make([]string, len(s))
	for i, p := range s {
		out[i] = p.Name()
	}
	return out
}

// newOptions returns a new options value of protocol name for a listener
// (cluster false) or a cluster, or nil.
func (s schemas) newOptions(name string, cluster bool) any {
	p := s.get(name)
	switch {
	case p == nil:
		return nil
	case cluster:
		return p.ClusterOptions()
	}
	return p.ListenerOptions()
}

// moved maps the old keys of every Mover to their new paths.
func (s schemas) moved() map[string]string {
	m := map[string]string{}
	for _, p := range s {
		if mv, ok := p.(Mover); ok {
			for from, to := range mv.Moved() {
				m[from] = to
			}
		}
	}
	return m
}

// move is an old key found in the file (see Mover).
type move struct {
	path, to string
	line     int
}

var indexes = regexp.MustCompile(`\[[0-9]+\]`)

// movedError says where to write an old key now, with the indexes of
// the file: "listeners[0].password: moved: write it as
// listeners[0].redis.password".
func (c *Config) movedError(m move) Error {
	to := m.to
	coll, rest, _ := strings.Cut(m.path, "[")
	idx, _, _ := strings.Cut(rest, "]")
	i, _ := strconv.Atoi(idx)
	switch {
	case strings.HasPrefix(to, coll+"[]"):
		to = fmt.Sprintf("%s[%d]%s", coll, i, strings.TrimPrefix(to, coll+"[]"))
	case coll == "listeners" && strings.HasPrefix(to, "clusters[]"):
		if k := c.clusterIndex(c.Listeners[i].Cluster); k >= 0 {
			to = fmt.Sprintf("clusters[%d]%s", k, strings.TrimPrefix(to, "clusters[]"))
		} else {
			to += " (of the cluster the listener names)"
		}
	}
	return Error{Path: m.path, Line: m.line, Msg: "moved: write it as " + to}
}

// readers are the protocols of protos that read a shared cluster field,
// and why the others do not.
func (s schemas) readers(field string, protos map[string]bool) (by []string, why string) {
	var whys []string
	for _, p := range s {
		ig, ok := p.(Ignorer)
		if !ok || ig.IgnoredClusterFields()[field] == "" {
			by = append(by, p.Name())
		} else if protos[p.Name()] {
			whys = append(whys, ig.IgnoredClusterFields()[field])
		}
	}
	return by, strings.Join(whys, "; ")
}

// HealthChecker is implemented by a protocol with a health check of its
// own kind, health_check.type its name, which talks to an endpoint the
// way the protocol's clients do (redis: PING after AUTH; postgres: a
// login).
type HealthChecker interface {
	ChecksHealth()
}

// healthCheckTypes are the health check types: tcp, amqp and http, and
// the protocols that implement HealthChecker.
func (s schemas) healthCheckTypes() []string {
	out := []string{"tcp", "amqp", "http"}
	for _, p := range s {
		if _, ok := p.(HealthChecker); ok && !slices.Contains(out, p.Name()) {
			out = append(out, p.Name())
		}
	}
	return out
}

// latencyTimers are the protocols that implement LatencyTimer.
func (s schemas) latencyTimers() []string {
	var out []string
	for _, p := range s {
		if _, ok := p.(LatencyTimer); ok {
			out = append(out, p.Name())
		}
	}
	slices.Sort(out)
	return out
}

// optionKeys are the protocols with options of a listener or a cluster,
// for an unknown field's "did you mean".
func (s schemas) optionKeys(cluster bool) []string {
	var out []string
	for _, n := range s.names() {
		if s.newOptions(n, cluster) != nil {
			out = append(out, n)
		}
	}
	return out
}

// applyOptionDefaults gives every listener the options of its protocol and
// every cluster those of the protocols of the listeners that use it, then
// fills in their defaults.
func (c *Config) applyOptionDefaults(s schemas) {
	for i := range c.Listeners {
		l := &c.Listeners[i]
		if o := s.newOptions(l.Protocol, false); o != nil && l.Options[l.Protocol] == nil {
			l.setOption(l.Protocol, o)
		}
		for name, o := range l.Options {
			if d, ok := o.(Defaulter); ok && name == l.Protocol {
				d.Default(c.listenerCheck(i, name, nil))
			}
		}
	}
	uses := c.clusterUses()
	for i := range c.Clusters {
		cl := &c.Clusters[i]
		for _, name := range s.names() {
			if o := s.newOptions(name, true); o != nil && cl.Options[name] == nil && uses[cl.Name][name] {
				cl.setOption(name, o)
			}
		}
		for name, o := range cl.Options {
			if d, ok := o.(Defaulter); ok {
				d.Default(c.clusterCheck(i, name, uses, nil))
			}
		}
	}
}

// validateOptions validates the options of every listener and cluster.
func (v *validator) validateOptions() {
	c := v.c
	for i := range c.Listeners {
		l := &c.Listeners[i]
		for _, name := range sortedKeys(l.Options) {
			if name != l.Protocol {
				v.errorf(fmt.Sprintf("listeners[%d].%s", i, name), "only for protocol %s", name)
				continue
			}
			if val, ok := l.Options[name].(Validator); ok {
				val.Validate(c.listenerCheck(i, name, v))
			}
		}
	}
	uses := c.clusterUses()
	for i := range c.Clusters {
		for _, name := range sortedKeys(c.Clusters[i].Options) {
			if val, ok := c.Clusters[i].Options[name].(Validator); ok {
				val.Validate(c.clusterCheck(i, name, uses, v))
			}
		}
	}
}

func (c *Config) listenerCheck(i int, name string, v *validator) *Check {
	l := &c.Listeners[i]
	p := fmt.Sprintf("listeners[%d]", i)
	ch := &Check{Config: c, Path: p + "." + name, Parent: p, Listener: l, Cluster: c.Cluster(l.Cluster), v: v}
	if ch.Cluster != nil {
		ch.ClusterPath = fmt.Sprintf("clusters[%d]", c.clusterIndex(l.Cluster))
	}
	return ch
}

func (c *Config) clusterCheck(i int, name string, uses map[string]map[string]bool, v *validator) *Check {
	cl := &c.Clusters[i]
	p := fmt.Sprintf("clusters[%d]", i)
	return &Check{Config: c, Path: p + "." + name, Parent: p, Cluster: cl, ClusterPath: p, UsedBy: uses[cl.Name], v: v}
}

// clusterUses maps each cluster's name to the protocols of the listeners
// that send to it.
func (c *Config) clusterUses() map[string]map[string]bool {
	uses := map[string]map[string]bool{}
	use := func(cluster, proto string) {
		if uses[cluster] == nil {
			uses[cluster] = map[string]bool{}
		}
		uses[cluster][proto] = true
	}
	for _, l := range c.Listeners {
		for _, cl := range l.Clusters() {
			use(cl, l.Protocol)
		}
	}
	return uses
}

// Clusters are the clusters a listener sends to: those its options name
// (ClusterUser), else listeners[].cluster.
func (l *Listener) Clusters() []string {
	if u, ok := l.Options[l.Protocol].(ClusterUser); ok {
		return u.Clusters()
	}
	return []string{l.Cluster}
}

func (l *Listener) setOption(name string, o any) {
	if l.Options == nil {
		l.Options = map[string]any{}
	}
	l.Options[name] = o
}

func (cl *Cluster) setOption(name string, o any) {
	if cl.Options == nil {
		cl.Options = map[string]any{}
	}
	cl.Options[name] = o
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// NewOptions returns a new options value of the protocol name among
// protocols: its listener options, or with cluster its cluster options;
// nil when it has none. It is for tools that walk the file's types
// (internal/kubecheck).
func NewOptions(protocols []Schema, name string, cluster bool) any {
	return schemas(protocols).newOptions(name, cluster)
}

// ClusterUser is implemented by listener options that say which clusters
// the listener sends to (an http listener's routes, the clusters its JWT
// keys come from); without it, a listener sends to listeners[].cluster.
type ClusterUser interface {
	Clusters() []string
}

// ClusterRef checks a reference to a cluster by name: required, and
// defined in clusters[] (with a "did you mean").
func (c *Check) ClusterRef(path, name string) {
	clusters := map[string]bool{}
	for _, cl := range c.Config.Clusters {
		clusters[cl.Name] = true
	}
	c.v.clusterRef(path, name, clusters)
}

// Name checks a name that must be unique among seen (which it is added
// to): required, of letters, digits, '_', '.' and '-'.
func (c *Check) Name(path, name, what string, seen map[string]bool) {
	c.v.name(path, name, what, seen)
}

// ValidHeaderName reports whether s is a header name (an RFC 9110 token).
func ValidHeaderName(s string) bool { return tokenPattern.MatchString(s) }

// ValidHeaderValue reports whether s can be sent as a header value.
func ValidHeaderValue(s string) bool { return validHeaderValue(s) }

// ValidAuthority reports whether s is host or host:port (RFC 9110 7.2).
func ValidAuthority(s string) bool { return validAuthority(s) }

// ValidPath reports whether s is an absolute path of URI characters.
func ValidPath(s string) bool { return validPath(s) }

// Suggest returns the candidate closest to s, if it is close enough to be
// what the user meant ("" if not).
func Suggest(s string, candidates []string) string { return suggest(s, candidates) }
