package kubecheck

import (
	"fmt"
	"reflect"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/attache-proxy/attache/internal/config"
	"github.com/attache-proxy/attache/internal/protocols"
)

// field is one value written in an attache configuration.
type field struct {
	path  string // "listeners[0].tls.cert_file"
	node  *yaml.Node
	raw   string // as written
	value string // ${VAR} expanded; "" when !known
	known bool   // false: it refers to a variable whose value is not in the manifests
	file  bool   // it names a file attache reads
}

// fields are the values of one configuration, by path and in file order.
type fields struct {
	byPath map[string]*field
	order  []*field
}

// readFields walks a configuration's YAML alongside config.Config's types,
// so that every value is found by its field path and file fields are known
// by their type rather than by a list kept here. Keys the schema does not
// have are skipped (config.Parse reports them). Keys a protocol still
// accepts where they were (config.Aliaser) are found at their new paths.
func readFields(root *yaml.Node, env *envLookup) *fields {
	fs := &fields{byPath: map[string]*field{}}
	if root != nil && root.Kind == yaml.DocumentNode && len(root.Content) > 0 {
		root = root.Content[0]
	}
	config.ApplyAliases(root, protocols.Schemas())
	fs.walk(root, reflect.TypeOf(config.Config{}), "", false, env, 0)
	return fs
}

func (fs *fields) walk(n *yaml.Node, t reflect.Type, path string, file bool, env *envLookup, depth int) {
	n = resolve(n)
	if n == nil || depth > 32 {
		return
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	f := &field{path: path, node: n, file: file && n.Kind == yaml.ScalarNode}
	if n.Kind == yaml.ScalarNode {
		f.raw = n.Value
		f.value, f.known = env.expand(n.Value)
	}
	if path != "" {
		fs.byPath[path] = f
		fs.order = append(fs.order, f)
	}
	switch {
	case t.Kind() == reflect.Struct && n.Kind == yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			key := n.Content[i].Value
			sf, ok := fieldByTag(t, key)
			if !ok {
				if o := protocolOptions(t, key); o != nil {
					fs.walk(n.Content[i+1], reflect.TypeOf(o), join(path, key), false, env, depth+1)
				}
				continue
			}
			fs.walk(n.Content[i+1], sf.Type, join(path, key), isFileField(t, sf), env, depth+1)
		}
	case t.Kind() == reflect.Slice && n.Kind == yaml.SequenceNode:
		for i, it := range n.Content {
			fs.walk(it, t.Elem(), fmt.Sprintf("%s[%d]", path, i), false, env, depth+1)
		}
	case t.Kind() == reflect.Map && n.Kind == yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			fs.walk(n.Content[i+1], t.Elem(), join(path, n.Content[i].Value), false, env, depth+1)
		}
	}
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// protocolOptions returns a new value of the options of protocol key,
// when struct t holds protocols' options (a listener or a cluster), or
// nil.
func protocolOptions(t reflect.Type, key string) any {
	for i := 0; i < t.NumField(); i++ {
		if o := t.Field(i).Tag.Get("options"); o != "" {
			return config.NewOptions(protocols.Schemas(), key, o == "cluster")
		}
	}
	return nil
}

func fieldByTag(t reflect.Type, key string) (reflect.StructField, bool) {
	for i := 0; i < t.NumField(); i++ {
		sf := t.Field(i)
		if name, _, _ := strings.Cut(sf.Tag.Get("yaml"), ","); name == key && sf.IsExported() {
			return sf, true
		}
	}
	return reflect.StructField{}, false
}

// isFileField reports whether a field of struct t names a file attache
// reads: a string whose key ends in _file, kubeconfig, or the path of
// file discovery.
func isFileField(t reflect.Type, sf reflect.StructField) bool {
	if sf.Type.Kind() != reflect.String {
		return false
	}
	name, _, _ := strings.Cut(sf.Tag.Get("yaml"), ",")
	return strings.HasSuffix(name, "_file") || name == "kubeconfig" ||
		(t == reflect.TypeOf(config.FileDiscovery{}) && name == "path")
}

// fileFieldPaths lists the file fields of config.Config as generic paths
// ("listeners[].tls.cert_file"); the tests pin the list.
func fileFieldPaths() []string {
	var out []string
	var walk func(t reflect.Type, path string, depth int)
	walk = func(t reflect.Type, path string, depth int) {
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		if depth > 10 {
			return
		}
		switch t.Kind() {
		case reflect.Slice:
			walk(t.Elem(), path+"[]", depth+1)
		case reflect.Map:
			walk(t.Elem(), path+".*", depth+1)
		case reflect.Struct:
			for i := 0; i < t.NumField(); i++ {
				sf := t.Field(i)
				if o := sf.Tag.Get("options"); o != "" {
					for _, s := range protocols.Schemas() {
						if v := config.NewOptions(protocols.Schemas(), s.Name(), o == "cluster"); v != nil {
							walk(reflect.TypeOf(v), join(path, s.Name()), depth+1)
						}
					}
					continue
				}
				name, _, _ := strings.Cut(sf.Tag.Get("yaml"), ",")
				if name == "" || !sf.IsExported() {
					continue
				}
				if isFileField(t, sf) {
					out = append(out, join(path, name))
				}
				walk(sf.Type, join(path, name), depth+1)
			}
		}
	}
	walk(reflect.TypeOf(config.Config{}), "", 0)
	return out
}

// get is the field at path, or nil.
func (fs *fields) get(path string) *field { return fs.byPath[path] }

// value is the expanded value at path, or def when it is not written.
func (fs *fields) value(path, def string) (string, *field) {
	f := fs.byPath[path]
	if f == nil || f.node.Kind != yaml.ScalarNode {
		return def, nil
	}
	return f.value, f
}

// count is the length of the list at path.
func (fs *fields) count(path string) int {
	f := fs.byPath[path]
	if f == nil || f.node.Kind != yaml.SequenceNode {
		return 0
	}
	return len(f.node.Content)
}

// envLookup resolves ${VAR} in a configuration the way the container's
// environment would: env entries with a literal value are known, those
// from valueFrom (and any variable at all when the container has envFrom
// a source not in the manifests) are there but unknown.
type envLookup struct {
	known   map[string]string
	unknown map[string]bool
	open    bool // envFrom a source not in the manifests: any name may be set
}

// lookup is for config.Parse: unknown values are given as "".
func (e *envLookup) lookup(name string) (string, bool) {
	if v, ok := e.known[name]; ok {
		return v, true
	}
	switch name {
	case "KUBERNETES_SERVICE_HOST": // set by the kubelet in every container
		return "10.96.0.1", true
	case "KUBERNETES_SERVICE_PORT":
		return "443", true
	}
	if e.unknown[name] || e.open {
		return "", true
	}
	return "", false
}

// expand is s with variables expanded, and whether all were known.
func (e *envLookup) expand(s string) (string, bool) {
	if !strings.Contains(s, "${") {
		return s, true
	}
	known := true
	v, err := config.ExpandEnv(s, func(name string) (string, bool) {
		if v, ok := e.known[name]; ok {
			return v, true
		}
		known = false
		return "", false
	})
	if err != nil || !known {
		return "", false
	}
	return v, true
}

// refersUnknown reports whether s refers to a variable that is set but
// whose value the manifests do not give.
func (e *envLookup) refersUnknown(s string) bool {
	for rest := s; ; {
		i := strings.Index(rest, "${")
		if i < 0 {
			return false
		}
		rest = rest[i+2:]
		j := strings.IndexByte(rest, '}')
		if j < 0 {
			return false
		}
		name, _, _ := strings.Cut(rest[:j], ":-")
		if _, ok := e.known[name]; !ok && (e.unknown[name] || e.open) {
			return true
		}
		rest = rest[j:]
	}
}
