package kubecheck

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"gopkg.in/yaml.v3"
)

// A kustomization.yaml among the files is read for what kustomize build
// would change in the others: its namespace, and the ConfigMaps and
// Secrets its configMapGenerator and secretGenerator make from files and
// literals. Generated objects are matched by the generator's name (the
// hash suffix kustomize appends is written into the references too).

// clusterScoped kinds take no namespace from a kustomization.
var clusterScoped = map[string]bool{"Namespace": true, "ClusterRole": true, "ClusterRoleBinding": true,
	"CustomResourceDefinition": true, "PersistentVolume": true, "StorageClass": true, "PriorityClass": true,
	"MutatingWebhookConfiguration": true, "ValidatingWebhookConfiguration": true, "Kustomization": true}

// kustomize applies every Kustomization among the objects: the namespace
// to the objects of its resources, and its generated objects added.
func (c *checker) kustomize() {
	var generated []*object
	for _, k := range c.objs {
		if k.kind != "Kustomization" {
			continue
		}
		ns := scalar(get(k.node, "namespace"))
		if ns != "" {
			for _, r := range strs(get(k.node, "resources")) {
				file := filepath.Join(filepath.Dir(k.file), r)
				for _, o := range c.objs {
					if filepath.Clean(o.file) == file && !clusterScoped[o.kind] {
						o.namespace = ns
					}
				}
			}
		}
		for _, g := range []struct{ field, kind string }{{"configMapGenerator", "ConfigMap"}, {"secretGenerator", "Secret"}} {
			for i, gen := range items(get(k.node, g.field)) {
				generated = append(generated, c.generate(k, g.kind, gen, ns, g.field, i)...)
			}
		}
	}
	c.objs = append(c.objs, generated...)
}

// generate makes the object of one generator: its files and literals are
// the keys. Problems in a key that came from a file are reported at the
// lines of that file (object.sources).
func (c *checker) generate(k *object, kind string, gen *yaml.Node, ns, field string, i int) []*object {
	name := scalar(get(gen, "name"))
	if g := scalar(get(gen, "namespace")); g != "" {
		ns = g
	}
	dataKey := "data"
	if kind == "Secret" {
		dataKey = "stringData"
	}
	o := &object{file: k.file, doc: k.doc, kind: kind, name: name, namespace: ns, generated: true,
		sources: map[*yaml.Node]string{}}
	data := mapping()
	for _, f := range strs(get(gen, "files")) {
		key, file, ok := strings.Cut(f, "=")
		if !ok {
			key, file = filepath.Base(f), f
		}
		if filepath.IsAbs(file) || !filepath.IsLocal(file) {
			c.add(k.problem(Error, fmt.Sprintf("%s[%d].files", field, i), gen, "%q is outside the kustomization's directory (kustomize refuses it too)", file))
			continue
		}
		src := filepath.Join(filepath.Dir(k.file), file)
		b, err := readBounded(src)
		if err != nil {
			c.add(k.problem(Error, fmt.Sprintf("%s[%d].files", field, i), gen, "%v", err))
			continue
		}
		value := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: string(b)}
		data.Content = append(data.Content, scalarNode(key), value)
		o.sources[value] = src
	}
	for _, l := range strs(get(gen, "literals")) {
		key, v, _ := strings.Cut(l, "=")
		data.Content = append(data.Content, scalarNode(key), scalarNode(strings.Trim(v, `"'`)))
	}
	o.node = mapping(scalarNode("metadata"), mapping(scalarNode("name"), scalarNode(name)), scalarNode(dataKey), data)
	return []*object{o}
}

func readBounded(name string) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxGenerated+1))
	if err == nil && len(b) > maxGenerated {
		err = fmt.Errorf("%s: larger than %d bytes", name, maxGenerated)
	}
	return b, err
}

// maxGenerated bounds a file a generator reads.
const maxGenerated = 1 << 20

// GeneratedFrom lists the files that a Kustomization among files makes a
// ConfigMap or Secret from (cleaned paths): attache validate checks those
// as the object's content, not as configuration files of their own.
func GeneratedFrom(files []File) []string {
	var out []string
	for _, f := range files {
		objs, _ := readObjects(f.Name, f.Data)
		for _, k := range objs {
			if k.kind != "Kustomization" {
				continue
			}
			for _, field := range []string{"configMapGenerator", "secretGenerator"} {
				for _, gen := range items(get(k.node, field)) {
					for _, s := range strs(get(gen, "files")) {
						if _, file, ok := strings.Cut(s, "="); ok {
							s = file
						}
						out = append(out, filepath.Join(filepath.Dir(f.Name), s))
					}
				}
			}
		}
	}
	return out
}

func mapping(kv ...*yaml.Node) *yaml.Node {
	return &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Content: kv}
}

func scalarNode(s string) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s}
}
