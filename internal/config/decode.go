package config

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Error is one problem in a configuration file.
type Error struct {
	Path string // field path, "clusters[1].balance"; empty for the whole file
	Line int    // 0 when unknown
	Msg  string
	Hint string // "did you mean ..."; optional
}

func (e Error) Error() string {
	var b strings.Builder
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	if e.Line > 0 {
		fmt.Fprintf(&b, " (line %d)", e.Line)
	}
	if e.Hint != "" {
		b.WriteString("; ")
		b.WriteString(e.Hint)
	}
	return b.String()
}

// Errors is every problem found in a file, in file order.
type Errors []Error

func (es Errors) Error() string {
	s := make([]string, len(es))
	for i, e := range es {
		s[i] = e.Error()
	}
	return strings.Join(s, "\n")
}

// Load reads, decodes, defaults and validates the file at path. lookupEnv
// resolves ${VAR} references; pass os.LookupEnv. protocols are the
// protocols the file may use, each with its options (see Schema;
// internal/protocols lists attache's). On failure the error is an Errors
// listing every problem.
func Load(path string, lookupEnv func(string) (string, bool), protocols []Schema) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, Errors{{Msg: fmt.Sprintf("read config: %v", err)}}
	}
	return Parse(data, lookupEnv, protocols)
}

// Parse is Load for a file already read.
func Parse(data []byte, lookupEnv func(string) (string, bool), protocols []Schema) (*Config, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, Errors{syntaxError(err)}
	}
	s := newSchemas(protocols)
	d := &decoder{lines: map[string]int{}, env: lookupEnv, schemas: s, moved: s.moved()}
	c := &Config{}
	if len(root.Content) > 0 {
		d.renames, d.errs = applyAliases(root.Content[0], s.aliases())
		d.value(root.Content[0], reflect.ValueOf(c).Elem(), "")
	}
	c.lines, c.env = d.lines, lookupEnv
	for _, m := range d.moves {
		d.errs = append(d.errs, c.movedError(m))
	}
	for _, e := range c.applyKubernetesAPI(lookupEnv) {
		if !d.failed(e.Path) {
			d.errs = append(d.errs, e)
		}
	}
	for _, e := range c.applyZone(lookupEnv) {
		if !d.failed(e.Path) {
			d.errs = append(d.errs, e)
		}
	}
	c.applyDefaults()
	c.applyOptionDefaults(s)
	// Validate even after decoding problems, so that one run lists them all;
	// a field that failed to decode is not reported a second time.
	for _, e := range c.validate(s) {
		if !d.failed(e.Path) {
			d.errs = append(d.errs, e)
		}
	}
	if len(d.errs) > 0 {
		return nil, d.sorted()
	}
	return c, nil
}

func syntaxError(err error) Error {
	msg := err.Error()
	msg = strings.TrimPrefix(msg, "yaml: ")
	line := 0
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		if i := strings.Index(rest, ": "); i > 0 {
			if n, err := strconv.Atoi(rest[:i]); err == nil {
				line, msg = n, rest[i+2:]
			}
		}
	}
	return Error{Line: line, Msg: "invalid YAML: " + msg}
}

// scalarDecoder is implemented by types written as one YAML scalar.
type scalarDecoder interface {
	decodeScalar(string) error
}

// decoder walks a yaml.Node tree into Go values by their yaml tags. Unlike
// yaml.v3's own decoder it keeps going after a problem, so that one run
// reports every problem with its field path and line.
type decoder struct {
	errs    Errors
	lines   map[string]int
	env     func(string) (string, bool)
	schemas schemas           // the protocols' options (see structure)
	moved   map[string]string // old keys and their new paths (see Mover)
	moves   []move            // old keys found
	renames renames           // keys moved from an alias (see Aliaser)
}

func (d *decoder) errorf(n *yaml.Node, path, format string, args ...any) {
	d.errs = append(d.errs, Error{Path: path, Line: n.Line, Msg: fmt.Sprintf(format, args...)})
}

// failed reports whether decoding already found a problem at path or inside it.
func (d *decoder) failed(path string) bool {
	for _, e := range d.errs {
		if e.Path == path || strings.HasPrefix(e.Path, path+".") || strings.HasPrefix(e.Path, path+"[") {
			return true
		}
	}
	return false
}

func (d *decoder) sorted() Errors {
	for i := range d.errs {
		d.errs[i].Path = d.renames.path(d.errs[i].Path)
	}
	sort.SliceStable(d.errs, func(i, j int) bool { return d.errs[i].Line < d.errs[j].Line })
	return d.errs
}

var scalarDecoderType = reflect.TypeOf((*scalarDecoder)(nil)).Elem()

func (d *decoder) value(n *yaml.Node, v reflect.Value, path string) {
	for n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if path != "" {
		d.lines[path] = n.Line
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return // an empty value keeps the default
	}
	if v.Kind() == reflect.Pointer {
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		d.value(n, v.Elem(), path)
		return
	}
	if v.Addr().Type().Implements(scalarDecoderType) {
		s, ok := d.scalar(n, path)
		if !ok {
			return
		}
		if err := v.Addr().Interface().(scalarDecoder).decodeScalar(s); err != nil {
			d.errorf(n, path, "%v", err)
		}
		return
	}
	switch v.Kind() {
	case reflect.Struct:
		d.structure(n, v, path)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			d.errorf(n, path, "expected a list, got %s", kindName(n))
			return
		}
		v.Set(reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content)))
		for i, item := range n.Content {
			d.value(item, v.Index(i), fmt.Sprintf("%s[%d]", path, i))
		}
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			d.errorf(n, path, "expected a mapping, got %s", kindName(n))
			return
		}
		v.Set(reflect.MakeMap(v.Type()))
		for i := 0; i+1 < len(n.Content); i += 2 {
			key := n.Content[i].Value
			elem := reflect.New(v.Type().Elem()).Elem()
			d.value(n.Content[i+1], elem, path+"."+key)
			v.SetMapIndex(reflect.ValueOf(key), elem)
		}
	case reflect.String:
		if s, ok := d.scalar(n, path); ok {
			v.SetString(s)
		}
	case reflect.Int:
		if s, ok := d.scalar(n, path); ok {
			i, err := strconv.Atoi(s)
			if err != nil {
				d.errorf(n, path, "expected an integer, got %q", s)
				return
			}
			v.SetInt(int64(i))
		}
	case reflect.Bool:
		if s, ok := d.scalar(n, path); ok {
			b, err := strconv.ParseBool(s)
			if err != nil {
				d.errorf(n, path, "expected true or false, got %q", s)
				return
			}
			v.SetBool(b)
		}
	default:
		panic(fmt.Sprintf("config: no decoding for %s at %s", v.Type(), path))
	}
}

func (d *decoder) structure(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.errorf(n, path, "expected a mapping, got %s", kindName(n))
		return
	}
	t := v.Type()
	fields := map[string]int{}
	var names []string
	options, cluster := -1, false // the field of the protocols' options
	for i := 0; i < t.NumField(); i++ {
		if o := t.Field(i).Tag.Get("options"); o != "" {
			options, cluster = i, o == "cluster"
			names = append(names, d.schemas.optionKeys(cluster)...)
			continue
		}
		tag := t.Field(i).Tag.Get("yaml")
		if tag == "" || tag == "-" {
			continue
		}
		fields[tag] = i
		names = append(names, tag)
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i]
		fpath := k.Value
		if path != "" {
			fpath = path + "." + k.Value
		}
		idx, ok := fields[k.Value]
		var opt any
		if !ok && options >= 0 {
			opt = d.schemas.newOptions(k.Value, cluster)
		}
		if !ok && opt != nil && !seen[k.Value] {
			// A protocol's options: listeners[].postgres, clusters[].redis.
			seen[k.Value] = true
			d.value(n.Content[i+1], reflect.ValueOf(opt), fpath)
			m := v.Field(options)
			if m.IsNil() {
				m.Set(reflect.MakeMap(m.Type()))
			}
			m.SetMapIndex(reflect.ValueOf(k.Value), reflect.ValueOf(opt))
			continue
		}
		if !ok && opt != nil {
			d.errorf(k, fpath, "field given twice")
			continue
		}
		if to, old := d.moved[indexes.ReplaceAllString(fpath, "[]")]; !ok && old {
			d.moves = append(d.moves, move{path: fpath, to: to, line: k.Line})
			continue
		}
		if !ok {
			e := Error{Path: fpath, Line: k.Line, Msg: "unknown field"}
			if s := suggest(k.Value, names); s != "" {
				e.Hint = fmt.Sprintf("did you mean %q?", s)
			}
			d.errs = append(d.errs, e)
			continue
		}
		if seen[k.Value] {
			d.errorf(k, fpath, "field given twice")
			continue
		}
		seen[k.Value] = true
		d.value(n.Content[i+1], v.Field(idx), fpath)
	}
}

// scalar returns the node's text with ${VAR} references expanded.
func (d *decoder) scalar(n *yaml.Node, path string) (string, bool) {
	if n.Kind != yaml.ScalarNode {
		d.errorf(n, path, "expected a single value, got %s", kindName(n))
		return "", false
	}
	s, err := expandEnv(n.Value, d.env)
	if err != nil {
		d.errorf(n, path, "%v", err)
		return "", false
	}
	return s, true
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	default:
		return fmt.Sprintf("%q", n.Value)
	}
}

// expandEnv replaces ${VAR} with the variable's value and ${VAR:-default}
// with the value or, when VAR is unset or empty, the default. "$$" stands for
// a literal "$". A reference to an unset variable without a default is an
// error, so a missing secret never silently becomes an empty string.
func expandEnv(s string, lookup func(string) (string, bool)) (string, error) {
	if !strings.Contains(s, "$") {
		return s, nil
	}
	var b strings.Builder
	var missing []string
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '$' || i+1 >= len(s) {
			b.WriteByte(c)
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
			continue
		case '{':
		default:
			b.WriteByte(c)
			continue
		}
		end := strings.IndexByte(s[i:], '}')
		if end < 0 {
			return "", errors.New("unclosed ${ in value")
		}
		ref := s[i+2 : i+end]
		name, def, hasDef := strings.Cut(ref, ":-")
		if !validEnvName(name) {
			return "", fmt.Errorf("invalid environment variable name %q", name)
		}
		val, ok := "", false
		if lookup != nil {
			val, ok = lookup(name)
		}
		switch {
		case ok && (val != "" || !hasDef):
			b.WriteString(val)
		case hasDef:
			b.WriteString(def)
		default:
			missing = append(missing, name)
		}
		i += end
	}
	if len(missing) > 0 {
		return "", fmt.Errorf("environment variable %s is not set", strings.Join(missing, ", "))
	}
	return b.String(), nil
}

func validEnvName(s string) bool {
	if s == "" {
		return false
	}
	for i, r := range s {
		if r == '_' || r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || i > 0 && r >= '0' && r <= '9' {
			continue
		}
		return false
	}
	return true
}

// suggest returns the candidate closest to s, if it is close enough to be
// what the user meant.
func suggest(s string, candidates []string) string {
	best, bestD := "", 1<<30
	for _, c := range candidates {
		if d := editDistance(s, c); d < bestD {
			best, bestD = c, d
		}
	}
	if bestD <= max(2, len(s)/3) {
		return best
	}
	return ""
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
