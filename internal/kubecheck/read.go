package kubecheck

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// object is one Kubernetes object: a document's root, or an item of a
// List (its paths then start with prefix, "items[2].").
type object struct {
	file      string
	doc       int // 1-based
	prefix    string
	node      *yaml.Node
	kind      string
	name      string
	namespace string
	generated bool                  // made by a kustomization's generator (file, doc: the kustomization's)
	sources   map[*yaml.Node]string // of a generated object: the file each value was read from
}

// id is Kind/name, as kubectl prints it.
func (o *object) id() string {
	name := o.name
	if name == "" {
		name = "(no name)"
	}
	return o.kind + "/" + name
}

// problem makes a Problem about o at path (relative to the object).
func (o *object) problem(sev Severity, path string, n *yaml.Node, format string, args ...any) Problem {
	p := Problem{File: o.file, Doc: o.doc, Object: o.id(), Severity: sev, Msg: fmt.Sprintf(format, args...)}
	if f, ok := o.sources[n]; ok { // a value read from a file: the file is the value
		p.File, p.Doc, p.Object = f, 0, ""
		return p
	}
	if path != "" {
		p.Path = o.prefix + path
	} else {
		p.Path = strings.TrimSuffix(o.prefix, ".")
	}
	if n != nil {
		p.Line = n.Line
	}
	return p
}

// IsManifest reports whether data holds Kubernetes objects (a document
// whose root has apiVersion and kind) rather than an attache
// configuration file, whose root has neither.
func IsManifest(data []byte) bool {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var doc yaml.Node
		if err := dec.Decode(&doc); err != nil {
			return false
		}
		if len(doc.Content) == 0 {
			continue
		}
		if root := doc.Content[0]; get(root, "apiVersion") != nil && get(root, "kind") != nil {
			return true
		}
	}
}

// maxDocuments bounds the documents read from one file.
const maxDocuments = 10000

// readObjects reads the YAML documents of one file and returns its
// objects, Lists flattened; a document that does not parse ends the file
// with a Problem (yaml.v3 cannot resume after a syntax error).
func readObjects(file string, data []byte) ([]*object, []Problem) {
	var objs []*object
	var probs []Problem
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for doc := 1; ; doc++ {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			probs = append(probs, Problem{File: file, Doc: doc, Severity: Error, Line: yamlLine(err),
				Msg: "invalid YAML: " + yamlMsg(err)})
			break
		}
		if doc > maxDocuments {
			probs = append(probs, Problem{File: file, Doc: doc, Severity: Error, Msg: fmt.Sprintf("more than %d documents", maxDocuments)})
			break
		}
		if len(n.Content) == 0 {
			continue // an empty document, as "---" at the end leaves
		}
		root := n.Content[0]
		if root.Kind != yaml.MappingNode {
			probs = append(probs, Problem{File: file, Doc: doc, Severity: Error, Line: root.Line,
				Msg: "not a Kubernetes object (want a mapping with apiVersion and kind)"})
			continue
		}
		objs = flatten(objs, &probs, &object{file: file, doc: doc, node: root}, 0)
	}
	return objs, probs
}

// flatten appends o, or the items of a List, to objs.
func flatten(objs []*object, probs *[]Problem, o *object, depth int) []*object {
	root := o.node
	o.kind = scalar(get(root, "kind"))
	meta := get(root, "metadata")
	o.name, o.namespace = scalar(get(meta, "name")), scalar(get(meta, "namespace"))
	if get(root, "apiVersion") == nil || o.kind == "" {
		*probs = append(*probs, o.problem(Error, "", root, "not a Kubernetes object (no apiVersion or kind)"))
		return objs
	}
	if !strings.HasSuffix(o.kind, "List") || depth > 0 {
		return append(objs, o)
	}
	items := get(root, "items")
	if items == nil || items.Kind != yaml.SequenceNode {
		return objs
	}
	for i, it := range items.Content {
		if it.Kind != yaml.MappingNode {
			continue
		}
		objs = flatten(objs, probs, &object{file: o.file, doc: o.doc, prefix: fmt.Sprintf("%sitems[%d].", o.prefix, i), node: it}, depth+1)
	}
	return objs
}

// yamlLine and yamlMsg split yaml.v3's "yaml: line N: msg".
func yamlLine(err error) int {
	s := strings.TrimPrefix(err.Error(), "yaml: ")
	if rest, ok := strings.CutPrefix(s, "line "); ok {
		if i := strings.Index(rest, ": "); i > 0 {
			if n, err := strconv.Atoi(rest[:i]); err == nil {
				return n
			}
		}
	}
	return 0
}

func yamlMsg(err error) string {
	s := strings.TrimPrefix(err.Error(), "yaml: ")
	if rest, ok := strings.CutPrefix(s, "line "); ok {
		if i := strings.Index(rest, ": "); i > 0 {
			return rest[i+2:]
		}
	}
	return s
}

// get is the value of key in mapping m, or nil.
func get(m *yaml.Node, key string) *yaml.Node {
	if m == nil || m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return resolve(m.Content[i+1])
		}
	}
	return nil
}

// resolve follows an alias (bounded: yaml.v3 refuses alias cycles).
func resolve(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && i < 100; i++ {
		n = n.Alias
	}
	return n
}

// scalar is n's value when it is a scalar, else "".
func scalar(n *yaml.Node) string {
	if n == nil || n.Kind != yaml.ScalarNode {
		return ""
	}
	return n.Value
}

// items is a sequence's entries; nil for anything else.
func items(n *yaml.Node) []*yaml.Node {
	if n == nil || n.Kind != yaml.SequenceNode {
		return nil
	}
	out := make([]*yaml.Node, len(n.Content))
	for i, c := range n.Content {
		out[i] = resolve(c)
	}
	return out
}

// strs is a sequence of scalars as strings.
func strs(n *yaml.Node) []string {
	var out []string
	for _, it := range items(n) {
		out = append(out, scalar(it))
	}
	return out
}
