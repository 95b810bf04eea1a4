package config

import (
	"fmt"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"
)

// Aliaser is implemented by a Schema whose options are still accepted at
// the keys they had before they were the protocol's: Aliases maps each old
// key, as a path with empty indexes ("listeners[].routes"), to where it is
// written now ("listeners[].http.routes"), under the same collection.
// Before decoding, each old key found is moved to its new place, with its
// lines; a file that writes both is refused. Problems found under a moved
// key are reported at the path the file wrote.
type Aliaser interface {
	Aliases() map[string]string
}

// aliases are the old keys of every Aliaser and their new paths.
func (s schemas) aliases() map[string]string {
	m := map[string]string{}
	for _, p := range s {
		if a, ok := p.(Aliaser); ok {
			for from, to := range a.Aliases() {
				m[from] = to
			}
		}
	}
	return m
}

// renames are the paths of moved keys as decoded ("listeners[0].http.routes")
// and as written ("listeners[0].routes").
type renames map[string]string

// applyAliases moves every old key of aliases found in the document root to
// its new path, and returns the renames and the files that write both.
func applyAliases(root *yaml.Node, aliases map[string]string) (renames, Errors) {
	rn := renames{}
	var errs Errors
	if root == nil || len(aliases) == 0 {
		return rn, nil
	}
	top := deref(root)
	for _, from := range sortedAliasKeys(aliases) {
		to := aliases[from]
		coll, fromRest, ok1 := strings.Cut(from, "[].")
		toColl, toRest, ok2 := strings.Cut(to, "[].")
		if !ok1 || !ok2 || coll != toColl {
			panic(fmt.Sprintf("config: alias %q -> %q: want collection[].key paths of one collection", from, to))
		}
		seq := mapValue(top, coll)
		if seq == nil || seq.Kind != yaml.SequenceNode {
			continue
		}
		for i, item := range seq.Content {
			item = deref(item)
			base := fmt.Sprintf("%s[%d]", coll, i)
			oldParent, oldKey := walk(item, fromRest)
			if oldParent == nil {
				continue
			}
			k := keyIndex(oldParent, oldKey)
			if k < 0 {
				continue
			}
			kn, vn := oldParent.Content[k], oldParent.Content[k+1]
			oldPath, newPath := base+"."+fromRest, base+"."+toRest
			newParent, newKey := walk(item, toRest)
			if newParent != nil {
				if keyIndex(newParent, newKey) >= 0 {
					errs = append(errs, Error{Path: oldPath, Line: kn.Line, Msg: "given twice: also " + newPath})
					oldParent.Content = append(oldParent.Content[:k:k], oldParent.Content[k+2:]...)
					continue
				}
			}
			// Create the missing parents, on the line of the old key; a
			// parent made here is reported as the old key.
			p, created := item, base
			parts := strings.Split(toRest, ".")
			for _, part := range parts[:len(parts)-1] {
				created += "." + part
				next := mapValue(p, part)
				if next == nil {
					next = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Line: kn.Line, Column: kn.Column}
					p.Content = append(p.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: part, Line: kn.Line, Column: kn.Column}, next)
					if _, done := rn[created]; !done {
						rn[created] = oldPath
					}
				}
				p = deref(next)
				if p.Kind != yaml.MappingNode {
					p = nil
					break
				}
			}
			if p == nil {
				continue // the new parent is not a mapping: the decoder says so
			}
			oldParent.Content = append(oldParent.Content[:k:k], oldParent.Content[k+2:]...)
			nk := *kn
			nk.Value = parts[len(parts)-1]
			p.Content = append(p.Content, &nk, vn)
			rn[newPath] = oldPath
		}
	}
	return rn, errs
}

// path rewrites a path under a moved key to the one the file wrote.
func (rn renames) path(p string) string {
	if w, ok := rn[p]; ok {
		return w
	}
	best := ""
	for decoded := range rn {
		if len(decoded) > len(best) && (strings.HasPrefix(p, decoded+".") || strings.HasPrefix(p, decoded+"[")) {
			best = decoded
		}
	}
	if best == "" {
		return p
	}
	return rn[best] + p[len(best):]
}

func deref(n *yaml.Node) *yaml.Node {
	for n != nil && (n.Kind == yaml.AliasNode || n.Kind == yaml.DocumentNode) {
		if n.Kind == yaml.AliasNode {
			n = n.Alias
		} else if len(n.Content) > 0 {
			n = n.Content[0]
		} else {
			return nil
		}
	}
	return n
}

// walk follows the dotted keys of rest but the last through mappings, and
// returns the mapping holding the last key and that key; nil when a mapping
// on the way is missing.
func walk(n *yaml.Node, rest string) (*yaml.Node, string) {
	parts := strings.Split(rest, ".")
	for _, part := range parts[:len(parts)-1] {
		n = mapValue(n, part)
	}
	if n == nil || n.Kind != yaml.MappingNode {
		return nil, ""
	}
	return n, parts[len(parts)-1]
}

// mapValue is the value of key in a mapping node, or nil.
func mapValue(n *yaml.Node, key string) *yaml.Node {
	n = deref(n)
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	if i := keyIndex(n, key); i >= 0 {
		return deref(n.Content[i+1])
	}
	return nil
}

func keyIndex(n *yaml.Node, key string) int {
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return i
		}
	}
	return -1
}

func sortedAliasKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// ApplyAliases moves the old keys of the protocols' aliases in a parsed
// file to their new paths, as Parse does before decoding, for tools that
// walk a file's YAML by the schema (internal/kubecheck). Where a file
// writes both forms the old key is dropped; Parse reports it.
func ApplyAliases(root *yaml.Node, protocols []Schema) {
	applyAliases(deref(root), schemas(protocols).aliases())
}
