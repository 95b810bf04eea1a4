// Package inject adds the attache sidecar to Kubernetes manifests: the
// pod specs of Pods, Deployments, StatefulSets, DaemonSets, ReplicaSets,
// Jobs and CronJobs, in multi-document YAML and in Lists. It edits
// yaml.v3 nodes in place, so comments, key order and every field it does
// not own survive; running it on its own output changes nothing.
package inject

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"

	"gopkg.in/yaml.v3"
)

// Name is the sidecar container's name; a container of that name is
// attache's, and is replaced rather than added again.
const Name = "attache"

// The fixed parts of the sidecar.
const (
	ConfigDir     = "/etc/attache"
	ConfigKey     = "attache.yaml"
	volumeName    = "attache-config"
	tokenVolume   = "attache-token"
	tokenDir      = "/var/run/secrets/kubernetes.io/serviceaccount"
	nonRootID     = 65532
	DefaultMap    = "attache-config"
	startupPeriod = 1
	startupTries  = 30
	readyPeriod   = 5
)

// Options say what to inject.
type Options struct {
	Image     string // the sidecar's image; required
	ConfigMap string // the ConfigMap holding ConfigKey; DefaultMap when ""
	Classic   bool   // a plain container instead of a native sidecar (Kubernetes < 1.29)
	// Config is the configuration file's content; when set, a ConfigMap
	// document holding it is written before the first injected object (one
	// per namespace), and Facts come from it.
	Config []byte
	Facts  Facts
}

// Facts are what the sidecar's spec needs from attache's configuration.
type Facts struct {
	ProbePort  int    // probes.address's port; 0: exec probes against the admin server
	Admin      string // admin.address when set and not the default; "off": none
	NeedsToken bool   // a cluster talks to the pod's API server with the service-account token
}

// Inject reads YAML documents from r and writes them to w with the sidecar
// added to every pod spec found. Documents of other kinds pass through.
func Inject(r io.Reader, w io.Writer, opts Options) error {
	if opts.Image == "" {
		return errors.New("inject: no image")
	}
	if opts.ConfigMap == "" {
		opts.ConfigMap = DefaultMap
	}
	var docs []*yaml.Node
	dec := yaml.NewDecoder(r)
	for {
		var doc yaml.Node
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("inject: document %d: %w", len(docs)+1, err)
		}
		docs = append(docs, &doc)
	}
	var out []*yaml.Node
	seen := map[string]bool{}
	if opts.Config != nil {
		updateConfigMaps(docs, opts, seen)
	}
	for i, doc := range docs {
		if len(doc.Content) == 0 {
			continue
		}
		root := doc.Content[0]
		var namespaces []string
		if err := injectObject(root, opts, &namespaces); err != nil {
			return fmt.Errorf("inject: document %d: %w", i+1, err)
		}
		if opts.Config != nil {
			for _, ns := range namespaces {
				if !seen[ns] {
					seen[ns] = true
					out = append(out, configMap(opts, ns))
				}
			}
		}
		out = append(out, doc)
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	for _, doc := range out {
		if err := enc.Encode(doc); err != nil {
			return fmt.Errorf("inject: %w", err)
		}
	}
	if err := enc.Close(); err != nil {
		return fmt.Errorf("inject: %w", err)
	}
	_, err := w.Write(buf.Bytes())
	return err
}

// injectObject injects into obj, a List's items, and appends the namespace
// ("" when unset) of each object it changed.
func injectObject(obj *yaml.Node, opts Options, namespaces *[]string) error {
	if obj.Kind != yaml.MappingNode {
		return nil
	}
	kind := scalar(get(obj, "kind"))
	if kind == "List" || (len(kind) > 4 && kind[len(kind)-4:] == "List") {
		items := get(obj, "items")
		if items == nil || items.Kind != yaml.SequenceNode {
			return nil
		}
		for i, item := range items.Content {
			if err := injectObject(item, opts, namespaces); err != nil {
				return fmt.Errorf("items[%d]: %w", i, err)
			}
		}
		return nil
	}
	path, ok := podSpecPath[kind]
	if !ok {
		return nil
	}
	spec := obj
	for _, k := range path {
		spec = get(spec, k)
		if spec == nil || spec.Kind != yaml.MappingNode {
			return fmt.Errorf("%s has no mapping at %v", kind, path)
		}
	}
	injectPodSpec(spec, opts)
	*namespaces = append(*namespaces, scalar(get(get(obj, "metadata"), "namespace")))
	return nil
}

// podSpecPath is where each kind keeps its pod spec.
var podSpecPath = map[string][]string{
	"Pod":         {"spec"},
	"Deployment":  {"spec", "template", "spec"},
	"StatefulSet": {"spec", "template", "spec"},
	"DaemonSet":   {"spec", "template", "spec"},
	"ReplicaSet":  {"spec", "template", "spec"},
	"Job":         {"spec", "template", "spec"},
	"CronJob":     {"spec", "jobTemplate", "spec", "template", "spec"},
}

// injectPodSpec puts the sidecar into spec: in place of a container named
// Name in the list it belongs in, else first in initContainers (native) or
// last in containers (classic), taking it out of the other list. An
// existing container keeps what inject does not own (env, ports, further
// volume mounts, a liveness probe, ...; see merge). It adds or replaces
// the config volume, and the token volume when needed.
func injectPodSpec(spec *yaml.Node, opts Options) {
	want, other := "initContainers", "containers"
	if opts.Classic {
		want, other = "containers", "initContainers"
	}
	c := container(opts, needsTokenVolume(spec, opts))
	var moved *yaml.Node // an attache container taken out of the other list
	if list := get(spec, other); list != nil {
		if i := indexNamed(list, Name); i >= 0 {
			moved = list.Content[i]
			list.Content = append(list.Content[:i], list.Content[i+1:]...)
			if len(list.Content) == 0 && other == "initContainers" {
				del(spec, other)
			}
		}
	}
	list := get(spec, want)
	if list == nil || list.Kind != yaml.SequenceNode {
		list = &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
		set(spec, want, list)
	}
	list.Style &^= yaml.FlowStyle // a flow list would print the sidecar on one line
	switch i := indexNamed(list, Name); {
	case i >= 0:
		list.Content[i] = merge(list.Content[i], c, opts.Classic)
	case moved != nil && opts.Classic:
		list.Content = append(list.Content, merge(moved, c, true))
	case moved != nil:
		list.Content = append([]*yaml.Node{merge(moved, c, false)}, list.Content...)
	case opts.Classic:
		list.Content = append(list.Content, c)
	default:
		list.Content = append([]*yaml.Node{c}, list.Content...)
	}
	volumes := get(spec, "volumes")
	if volumes == nil || volumes.Kind != yaml.SequenceNode {
		volumes = &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
		set(spec, "volumes", volumes)
	}
	volumes.Style &^= yaml.FlowStyle
	putNamed(volumes, volumeName, mapping(
		"name", volumeName,
		"configMap", mapping("name", opts.ConfigMap)))
	if needsTokenVolume(spec, opts) {
		putNamed(volumes, tokenVolume, tokenVolumeNode())
	} else if i := indexNamed(volumes, tokenVolume); i >= 0 {
		volumes.Content = append(volumes.Content[:i], volumes.Content[i+1:]...)
	}
}

// merge makes old, an existing attache container, the sidecar c: every
// key of c replaces old's (restartPolicy is dropped for a classic
// sidecar), and c's volume mounts replace those of the same name, or of
// the same path, in old's list (the token mount is dropped when c has
// none). Other keys and mounts of old, and its comments, stay; so does its
// key order, with new keys last.
func merge(old, c *yaml.Node, classic bool) *yaml.Node {
	if old.Kind != yaml.MappingNode {
		return c
	}
	if classic {
		del(old, "restartPolicy")
	}
	for i := 0; i+1 < len(c.Content); i += 2 {
		key, v := c.Content[i].Value, c.Content[i+1]
		if key != "volumeMounts" {
			set(old, key, v)
			continue
		}
		mounts := get(old, key)
		if mounts == nil || mounts.Kind != yaml.SequenceNode {
			set(old, key, v)
			continue
		}
		mounts.Style &^= yaml.FlowStyle
		var kept []*yaml.Node
		for _, m := range mounts.Content {
			name, path := scalar(get(m, "name")), scalar(get(m, "mountPath"))
			if name != tokenVolume && indexNamed(v, name) < 0 && indexPath(v, path) < 0 {
				kept = append(kept, m)
			}
		}
		// Inject's own mounts first, in place of the ones they replace.
		mounts.Content = append(append([]*yaml.Node{}, v.Content...), kept...)
	}
	return old
}

// indexPath is the index of the volume mount of list at path, or -1.
func indexPath(list *yaml.Node, path string) int {
	for i, it := range list.Content {
		if path != "" && scalar(get(it, "mountPath")) == path {
			return i
		}
	}
	return -1
}

// needsTokenVolume reports whether attache needs the token but the pod
// does not mount it (automountServiceAccountToken: false): then attache
// alone gets a projected token where the kubelet would have put it.
func needsTokenVolume(spec *yaml.Node, opts Options) bool {
	return opts.Facts.NeedsToken && scalar(get(spec, "automountServiceAccountToken")) == "false"
}

// container is the sidecar's container node.
func container(opts Options, tokenMount bool) *yaml.Node {
	mounts := seq(mapping("name", volumeName, "mountPath", ConfigDir, "readOnly", true))
	if tokenMount {
		mounts.Content = append(mounts.Content, mapping("name", tokenVolume, "mountPath", tokenDir, "readOnly", true))
	}
	kv := []any{
		"name", Name,
		"image", opts.Image,
	}
	if !opts.Classic {
		kv = append(kv, "restartPolicy", "Always")
	}
	kv = append(kv, "args", seq("run", "--config", ConfigDir+"/"+ConfigKey))
	if p := probe(opts.Facts, "started"); p != nil {
		p.Content = append(p.Content, mapping("periodSeconds", startupPeriod, "failureThreshold", startupTries).Content...)
		kv = append(kv, "startupProbe", p)
	}
	if p := probe(opts.Facts, "ready"); p != nil {
		p.Content = append(p.Content, mapping("periodSeconds", readyPeriod).Content...)
		kv = append(kv, "readinessProbe", p)
	}
	kv = append(kv,
		"resources", mapping(
			"requests", mapping("cpu", "50m", "memory", "32Mi"),
			"limits", mapping("memory", "128Mi")),
		"securityContext", mapping(
			"runAsNonRoot", true,
			"runAsUser", nonRootID,
			"runAsGroup", nonRootID,
			"readOnlyRootFilesystem", true,
			"allowPrivilegeEscalation", false,
			"capabilities", mapping("drop", seq("ALL"))),
		"volumeMounts", mounts)
	return mapping(kv...)
}

// probe is an httpGet probe on the probe server's port when the
// configuration has one, else an exec of `/attache probe` against the
// admin server; nil when the admin server is off and there is no probe
// server.
func probe(f Facts, which string) *yaml.Node {
	if f.ProbePort != 0 {
		return mapping("httpGet", mapping("path", "/"+which, "port", f.ProbePort))
	}
	if f.Admin == "off" {
		return nil
	}
	cmd := seq("/attache", "probe", which)
	if f.Admin != "" {
		cmd.Content = append(cmd.Content, seq("--admin", f.Admin).Content...)
	}
	return mapping("exec", mapping("command", cmd))
}

// tokenVolumeNode is the projected volume the kubelet itself mounts for
// automountServiceAccountToken: a bound token, the cluster CA and the
// namespace.
func tokenVolumeNode() *yaml.Node {
	return mapping("name", tokenVolume, "projected", mapping("sources", seq(
		mapping("serviceAccountToken", mapping("path", "token", "expirationSeconds", 3607)),
		mapping("configMap", mapping("name", "kube-root-ca.crt", "items", seq(mapping("key", "ca.crt", "path", "ca.crt")))),
		mapping("downwardAPI", mapping("items", seq(mapping("path", "namespace",
			"fieldRef", mapping("apiVersion", "v1", "fieldPath", "metadata.namespace"))))),
	)))
}

// configMap is the ConfigMap document holding the configuration.
func configMap(opts Options, namespace string) *yaml.Node {
	meta := mapping("name", opts.ConfigMap)
	if namespace != "" {
		meta = mapping("name", opts.ConfigMap, "namespace", namespace)
	}
	body := configBody(opts)
	return &yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{mapping(
		"apiVersion", "v1",
		"kind", "ConfigMap",
		"metadata", meta,
		"data", mapping(ConfigKey, body))}}
}

// updateConfigMaps puts the configuration into the ConfigMap documents
// named opts.ConfigMap that docs already have (the output of an earlier
// run), and marks their namespaces seen so that no second one is emitted.
func updateConfigMaps(docs []*yaml.Node, opts Options, seen map[string]bool) {
	for _, doc := range docs {
		if len(doc.Content) == 0 {
			continue
		}
		root := doc.Content[0]
		meta := get(root, "metadata")
		if scalar(get(root, "kind")) != "ConfigMap" || scalar(get(meta, "name")) != opts.ConfigMap {
			continue
		}
		seen[scalar(get(meta, "namespace"))] = true
		data := get(root, "data")
		if data == nil || data.Kind != yaml.MappingNode {
			data = mapping()
			set(root, "data", data)
		}
		set(data, ConfigKey, configBody(opts))
	}
}

func configBody(opts Options) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: string(opts.Config), Style: yaml.LiteralStyle}
}

// mapping builds a mapping node from key, value pairs; values are nodes,
// strings, ints or bools.
func mapping(kv ...any) *yaml.Node {
	m := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	for i := 0; i+1 < len(kv); i += 2 {
		m.Content = append(m.Content, node(kv[i]), node(kv[i+1]))
	}
	return m
}

func seq(items ...any) *yaml.Node {
	s := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
	for _, it := range items {
		s.Content = append(s.Content, node(it))
	}
	return s
}

func node(v any) *yaml.Node {
	switch v := v.(type) {
	case *yaml.Node:
		return v
	case string:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: v}
	case int:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!int", Value: strconv.Itoa(v)}
	case bool:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!bool", Value: strconv.FormatBool(v)}
	}
	panic(fmt.Sprintf("inject: node of %T", v))
}

// get is the value of key in mapping m, or nil.
func get(m *yaml.Node, key string) *yaml.Node {
	if m == nil || m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

// set replaces key's value in m, or appends the pair.
func set(m *yaml.Node, key string, v *yaml.Node) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			m.Content[i+1] = v
			return
		}
	}
	m.Content = append(m.Content, node(key), v)
}

func del(m *yaml.Node, key string) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			m.Content = append(m.Content[:i], m.Content[i+2:]...)
			return
		}
	}
}

// scalar is n's value when it is a scalar, else "".
func scalar(n *yaml.Node) string {
	if n == nil || n.Kind != yaml.ScalarNode {
		return ""
	}
	return n.Value
}

// indexNamed is the index of the entry of list whose name is name, or -1.
func indexNamed(list *yaml.Node, name string) int {
	if list == nil || list.Kind != yaml.SequenceNode {
		return -1
	}
	for i, it := range list.Content {
		if scalar(get(it, "name")) == name {
			return i
		}
	}
	return -1
}

// putNamed replaces the entry of list named name with v, or appends v.
func putNamed(list *yaml.Node, name string, v *yaml.Node) {
	if i := indexNamed(list, name); i >= 0 {
		list.Content[i] = v
		return
	}
	list.Content = append(list.Content, v)
}
