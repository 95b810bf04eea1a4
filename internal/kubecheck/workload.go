package kubecheck

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/attache-proxy/attache/internal/config"
	"github.com/attache-proxy/attache/internal/inject"
	"github.com/attache-proxy/attache/internal/protocols"
)

// container is one container of a pod spec.
type container struct {
	node *yaml.Node
	path string // "spec.template.spec.initContainers[0]"
	init bool
}

func (ct container) name() string { return scalar(get(ct.node, "name")) }

// sidecar is an attache container being checked, with its pod.
type sidecar struct {
	*checker
	o       *object
	spec    *yaml.Node
	sp      string // the pod spec's path
	ct      container
	all     []container
	mounts  []mount
	volumes map[string]volume
	env     *envLookup
	warned  map[*mount]bool // subPath warnings given
}

// mount is one volumeMount of the attache container.
type mount struct {
	dir     string // mountPath, cleaned
	name    string
	subPath string
	node    *yaml.Node
	path    string
}

// volume is one entry of the pod's volumes.
type volume struct {
	node *yaml.Node
	path string
}

// workload checks o when it has a pod spec with an attache container.
func (c *checker) workload(o *object) {
	keys, ok := inject.PodSpecPath(o.kind)
	if !ok {
		return
	}
	spec := o.node
	for _, k := range keys {
		spec = get(spec, k)
	}
	sp := strings.Join(keys, ".")
	if spec == nil || spec.Kind != yaml.MappingNode {
		c.add(o.problem(Error, sp, o.node, "%s has no pod spec", o.kind))
		return
	}
	var all, found []container
	for _, list := range []string{"initContainers", "containers"} {
		for i, n := range items(get(spec, list)) {
			ct := container{node: n, path: fmt.Sprintf("%s.%s[%d]", sp, list, i), init: list == "initContainers"}
			all = append(all, ct)
			if isAttache(n) {
				found = append(found, ct)
			}
		}
	}
	if len(found) == 0 {
		return
	}
	for _, ct := range found[1:] {
		c.add(o.problem(Error, ct.path, ct.node, "a second attache container (the first is %s): their listeners would take the same ports", found[0].path))
	}
	s := &sidecar{checker: c, o: o, spec: spec, sp: sp, ct: found[0], all: all, warned: map[*mount]bool{}}
	s.check()
}

// isAttache recognises the sidecar as attache inject writes it (its name)
// or by its image (a repository whose last element is attache).
func isAttache(n *yaml.Node) bool {
	if scalar(get(n, "name")) == inject.Name {
		return true
	}
	img := scalar(get(n, "image"))
	if i := strings.IndexByte(img, '@'); i >= 0 {
		img = img[:i]
	}
	if i := strings.LastIndexByte(img, '/'); i >= 0 {
		img = img[i+1:]
	}
	if i := strings.IndexByte(img, ':'); i >= 0 {
		img = img[:i]
	}
	return img == "attache"
}

func (s *sidecar) check() {
	sc := Sidecar{File: s.o.file, Doc: s.o.doc, Object: s.o.id(), Container: s.o.prefix + s.ct.path}
	defer func() { s.sidecars = append(s.sidecars, sc) }()
	s.placement()
	s.readVolumes()
	cfgPath, argNode, argPath, ok := s.configArg()
	if !ok {
		return
	}
	s.env = s.containerEnv()
	var src source
	wired := true // the config is found where --config points
	if m := s.mountFor(cfgPath); m == nil {
		mn, mp := s.mountsNode()
		s.add(s.o.problem(Error, mp, mn, "the config is read from %s but nothing is mounted at %s", cfgPath, path.Dir(cfgPath)))
		src, wired = s.guessConfig(cfgPath), false
	} else {
		src = s.lookupFile(m, cfgPath)
		s.subPath(m, "the config")
	}
	switch {
	case !wired && src.obj == nil:
		return
	case !wired:
	case src.skip != "":
		s.add(s.o.problem(Warning, src.volPath, src.volNode, "the config %s comes from %s, which cannot be checked here", cfgPath, src.skip))
		return
	case src.missing != "":
		s.add(s.o.problem(Error, argPath, argNode, "the config is read from %s, but %s", cfgPath, src.missing))
		if src, wired = s.guessConfig(cfgPath), false; src.obj == nil {
			return
		}
	case src.absent != "":
		p := s.o.problem(Error, src.refPath, src.refNode, "%s is not in the given files, so the config (%s) cannot be checked", src.absent, cfgPath)
		p.Hint = "give the file that holds it too (for a kustomization: kubectl kustomize DIR | attache validate -)"
		s.add(p)
		return
	}
	sc.Config = fmt.Sprintf("%s key %s", src.obj.id(), src.key)
	text, lines, err := src.text()
	if err != nil {
		s.add(src.obj.problem(Error, src.dataPath, src.dataNode, "%v", err))
		return
	}
	var root yaml.Node
	syntaxErr := yaml.Unmarshal(text, &root)
	if syntaxErr == nil && expandedSize(&root, map[*yaml.Node]int{}) > maxConfigNodes {
		if !s.validated[src.dataNode] {
			s.validated[src.dataNode] = true
			s.add(src.obj.problem(Error, src.dataPath, src.dataNode, "the configuration expands to more than %d YAML nodes through its aliases", maxConfigNodes))
		}
		return
	}
	s.validateConfig(src, text, lines)
	if syntaxErr != nil {
		return // config.Parse has reported it
	}
	fs := readFields(&root, s.env)
	if v, f := fs.value("drain_min", ""); !s.ct.init && f != nil && f.known {
		if d, err := time.ParseDuration(v); err == nil && d == 0 {
			s.add(s.o.problem(Warning, s.ct.path, s.ct.node, "a classic sidecar with drain_min: %s exits at SIGTERM when no connection is open, cutting the application's egress while it drains", v))
		}
	}
	if wired {
		s.files(fs) // else every mount is suspect, and reported above
	}
	s.probes(fs)
	s.token(fs)
	s.rbac(fs)
	s.ports(fs)
}

// maxConfigNodes bounds an embedded configuration with its aliases
// expanded: the decoders follow aliases, so a few lines of YAML could
// otherwise make them visit billions of nodes.
const maxConfigNodes = 100000

// expandedSize is the number of nodes under n with aliases expanded,
// counted once per node (memo), so in time linear in the document; it
// stops growing past maxConfigNodes.
func expandedSize(n *yaml.Node, memo map[*yaml.Node]int) int {
	if n == nil {
		return 0
	}
	if v, ok := memo[n]; ok {
		return v
	}
	memo[n] = maxConfigNodes + 1 // a cycle counts as too large
	size := 1
	if n.Kind == yaml.AliasNode {
		size += expandedSize(n.Alias, memo)
	}
	for _, c := range n.Content {
		if size > maxConfigNodes {
			break
		}
		size += expandedSize(c, memo)
	}
	size = min(size, maxConfigNodes+1)
	memo[n] = size
	return size
}

// guessConfig finds the configuration when --config does not lead to it:
// the only key named like the file in a ConfigMap or Secret that a volume
// of the pod projects (and that is among the files), so that its own
// problems are reported too. Its obj is nil when there is none, or more
// than one.
func (s *sidecar) guessConfig(cfgPath string) source {
	var found []source
	for _, v := range s.volumes {
		refs, _ := volumeRefs(v)
		for _, r := range refs {
			key := path.Base(cfgPath)
			for _, it := range items(r.items) {
				if path.Base(scalar(get(it, "path"))) == key {
					key = scalar(get(it, "key"))
				}
			}
			o, _ := s.find(r.kind, r.name, s.o)
			if o == nil {
				continue
			}
			for _, dk := range dataKeys(r.kind) {
				if n := get(get(o.node, dk.field), key); n != nil {
					found = append(found, source{obj: o, key: key, dataNode: n, dataPath: dk.field + "." + key, base64: dk.base64})
					break
				}
			}
		}
	}
	if len(found) != 1 {
		return source{}
	}
	return found[0]
}

// placement: a native sidecar needs restartPolicy Always; a classic one
// is noted, and is an error in a Job, which it would keep from completing.
func (s *sidecar) placement() {
	rp := get(s.ct.node, "restartPolicy")
	switch {
	case s.ct.init && scalar(rp) != "Always":
		n, p := rp, s.ct.path+".restartPolicy"
		if rp == nil {
			n, p = s.ct.node, s.ct.path
		}
		s.add(s.o.problem(Error, p, n, "an init container without restartPolicy: Always must exit before the next one starts, and attache runs until it is stopped, so the pod never starts; set restartPolicy: Always (a native sidecar, Kubernetes 1.29+)"))
	case !s.ct.init && rp != nil:
		s.add(s.o.problem(Error, s.ct.path+".restartPolicy", rp, "only init containers take restartPolicy (the API server refuses it here); move attache to initContainers for a native sidecar"))
	case !s.ct.init && (s.o.kind == "Job" || s.o.kind == "CronJob"):
		s.add(s.o.problem(Error, s.ct.path, s.ct.node, "a classic sidecar in a Job keeps running after the application exits, so the Job never completes; make it a native sidecar (initContainers with restartPolicy: Always)"))
	case !s.ct.init:
		s.add(s.o.problem(Note, s.ct.path, s.ct.node, "a classic sidecar: attache gets SIGTERM together with the application and keeps accepting for drain_min (5s by default); a native sidecar (initContainers with restartPolicy: Always, Kubernetes 1.29+) is stopped after it"))
	}
}

// configArg finds --config in the container's arguments: the image's
// entrypoint is the binary, so args are `run --config FILE`.
func (s *sidecar) configArg() (file string, n *yaml.Node, p string, ok bool) {
	argsNode := get(s.ct.node, "args")
	args := items(argsNode)
	argsPath := s.ct.path + ".args"
	cmd := items(get(s.ct.node, "command"))
	if len(cmd) > 1 { // command: [/attache, run, ...]: the arguments start there
		args = append(cmd[1:len(cmd):len(cmd)], args...)
		argsNode, argsPath = get(s.ct.node, "command"), s.ct.path+".command"
	}
	if argsNode == nil {
		argsNode = s.ct.node
	}
	if len(args) == 0 {
		s.add(s.o.problem(Error, argsPath, argsNode, "no arguments: want run --config FILE"))
		return "", nil, "", false
	}
	if sub := scalar(args[0]); sub != "run" {
		if sub == "forward" {
			s.add(s.o.problem(Note, argsPath, argsNode, "attache forward has no configuration to check"))
		} else {
			s.add(s.o.problem(Error, argsPath, argsNode, "attache %q does not serve; want run --config FILE", sub))
		}
		return "", nil, "", false
	}
	for i := 1; i < len(args); i++ {
		a := scalar(args[i])
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "-") || name != "config" {
			continue
		}
		argPath := argsPath
		if idx := slices.Index(argsNode.Content, args[i]); idx >= 0 {
			argPath = fmt.Sprintf("%s[%d]", argsPath, idx)
		}
		n = args[i]
		if !hasVal {
			if i+1 >= len(args) {
				break
			}
			n, val = args[i+1], scalar(args[i+1])
			if idx := slices.Index(argsNode.Content, args[i+1]); idx >= 0 {
				argPath = fmt.Sprintf("%s[%d]", argsPath, idx)
			}
		}
		if !path.IsAbs(val) {
			s.add(s.o.problem(Error, argPath, n, "--config %q: give an absolute path (the working directory is the image's)", val))
			return "", nil, "", false
		}
		return path.Clean(val), n, argPath, true
	}
	s.add(s.o.problem(Error, argsPath, argsNode, "attache run needs --config FILE"))
	return "", nil, "", false
}

// containerEnv is the attache container's environment as far as the
// manifests give it.
func (s *sidecar) containerEnv() *envLookup {
	e := &envLookup{known: map[string]string{}, unknown: map[string]bool{}}
	for _, ef := range items(get(s.ct.node, "envFrom")) {
		prefix := scalar(get(ef, "prefix"))
		var o *object
		switch {
		case get(ef, "configMapRef") != nil:
			o, _ = s.find("ConfigMap", scalar(get(get(ef, "configMapRef"), "name")), s.o)
		case get(ef, "secretRef") != nil:
			o, _ = s.find("Secret", scalar(get(get(ef, "secretRef"), "name")), s.o)
		}
		if o == nil {
			e.open = true
			continue
		}
		for _, k := range []string{"data", "stringData", "binaryData"} {
			d := get(o.node, k)
			for i := 0; d != nil && d.Kind == yaml.MappingNode && i+1 < len(d.Content); i += 2 {
				name := prefix + d.Content[i].Value
				if o.kind == "ConfigMap" && k == "data" {
					e.known[name] = scalar(d.Content[i+1])
				} else {
					e.unknown[name] = true
				}
			}
		}
	}
	for _, ev := range items(get(s.ct.node, "env")) {
		name := scalar(get(ev, "name"))
		if v := get(ev, "value"); v != nil {
			e.known[name] = scalar(v)
			delete(e.unknown, name)
		} else {
			delete(e.known, name)
			e.unknown[name] = true
		}
	}
	return e
}

func (s *sidecar) readVolumes() {
	s.volumes = map[string]volume{}
	for i, v := range items(get(s.spec, "volumes")) {
		s.volumes[scalar(get(v, "name"))] = volume{node: v, path: fmt.Sprintf("%s.volumes[%d]", s.sp, i)}
	}
	for i, m := range items(get(s.ct.node, "volumeMounts")) {
		mp := fmt.Sprintf("%s.volumeMounts[%d]", s.ct.path, i)
		dir := scalar(get(m, "mountPath"))
		mt := mount{dir: path.Clean(dir), name: scalar(get(m, "name")), subPath: scalar(get(m, "subPath")), node: m, path: mp}
		if _, ok := s.volumes[mt.name]; !ok {
			s.add(s.o.problem(Error, mp+".name", get(m, "name"), "no volume %q in %s.volumes", mt.name, s.sp))
			continue
		}
		if !path.IsAbs(dir) {
			s.add(s.o.problem(Error, mp+".mountPath", get(m, "mountPath"), "%q is not an absolute path", dir))
			continue
		}
		s.mounts = append(s.mounts, mt)
	}
}

// mountsNode is the container's volumeMounts (or the container) and its path.
func (s *sidecar) mountsNode() (*yaml.Node, string) {
	if n := get(s.ct.node, "volumeMounts"); n != nil {
		return n, s.ct.path + ".volumeMounts"
	}
	return s.ct.node, s.ct.path
}

// mountFor is the mount that file lies on (the deepest), or nil.
func (s *sidecar) mountFor(file string) *mount {
	var best *mount
	for i := range s.mounts {
		m := &s.mounts[i]
		if under(file, m.dir) && (best == nil || len(m.dir) > len(best.dir)) {
			best = m
		}
	}
	return best
}

// under reports whether file is dir or lies below it.
func under(file, dir string) bool {
	return file == dir || dir == "/" || strings.HasPrefix(file, dir+"/")
}

// source is where a file on a volume comes from.
type source struct {
	obj      *object // the ConfigMap or Secret holding it
	key      string
	dataNode *yaml.Node // the key's value
	dataPath string     // "data.attache.yaml"
	base64   bool
	volNode  *yaml.Node
	volPath  string
	refNode  *yaml.Node // the name that points at the object
	refPath  string
	skip     string // a volume kind whose content is not in manifests: "an emptyDir volume"
	missing  string // the object is there but has no such key, or no item maps the file
	absent   string // the object is not in the files: `ConfigMap "x"`
}

// volumeRef is one ConfigMap or Secret a volume projects.
type volumeRef struct {
	kind, name string
	items      *yaml.Node
	node       *yaml.Node // the configMap/secret mapping
	path       string
	nameNode   *yaml.Node
	namePath   string
}

func volumeRefs(v volume) ([]volumeRef, string) {
	ref := func(kind string, n *yaml.Node, p, nameKey string) volumeRef {
		return volumeRef{kind: kind, name: scalar(get(n, nameKey)), items: get(n, "items"), node: n, path: p,
			nameNode: get(n, nameKey), namePath: p + "." + nameKey}
	}
	if n := get(v.node, "configMap"); n != nil {
		return []volumeRef{ref("ConfigMap", n, v.path+".configMap", "name")}, ""
	}
	if n := get(v.node, "secret"); n != nil {
		return []volumeRef{ref("Secret", n, v.path+".secret", "secretName")}, ""
	}
	if n := get(v.node, "projected"); n != nil {
		var refs []volumeRef
		for i, src := range items(get(n, "sources")) {
			p := fmt.Sprintf("%s.projected.sources[%d]", v.path, i)
			if c := get(src, "configMap"); c != nil {
				refs = append(refs, ref("ConfigMap", c, p+".configMap", "name"))
			}
			if c := get(src, "secret"); c != nil {
				refs = append(refs, ref("Secret", c, p+".secret", "name"))
			}
		}
		return refs, ""
	}
	for i := 0; v.node != nil && i+1 < len(v.node.Content); i += 2 {
		if k := v.node.Content[i].Value; k != "name" {
			return nil, fmt.Sprintf("a %s volume", k)
		}
	}
	return nil, "a volume with no source"
}

// projectedOther reports whether a projected volume's serviceAccountToken,
// clusterTrustBundle or downwardAPI source writes the file at p.
func projectedOther(v volume, p string) bool {
	for _, src := range items(get(get(v.node, "projected"), "sources")) {
		for _, k := range []string{"serviceAccountToken", "clusterTrustBundle"} {
			if t := get(src, k); t != nil && path.Clean(scalar(get(t, "path"))) == p {
				return true
			}
		}
		for _, it := range items(get(get(src, "downwardAPI"), "items")) {
			if path.Clean(scalar(get(it, "path"))) == p {
				return true
			}
		}
	}
	return false
}

// lookupFile finds what holds file, which lies on mount m.
func (s *sidecar) lookupFile(m *mount, file string) source {
	v := s.volumes[m.name]
	src := source{volNode: v.node, volPath: v.path}
	rel := strings.TrimPrefix(strings.TrimPrefix(file, m.dir), "/")
	inVol := path.Join(m.subPath, rel)
	refs, skip := volumeRefs(v)
	if skip != "" {
		src.skip = skip
		return src
	}
	if inVol == "" {
		src.missing = fmt.Sprintf("%s mounts a volume there, which makes it a directory; mount the directory above it, or give subPath", s.o.prefix+m.path)
		return src
	}
	if projectedOther(v, inVol) {
		src.skip = "a projected token or downward API file"
		return src
	}
	var missing, absent []string
	for _, r := range refs {
		key := inVol
		if its := items(r.items); len(its) > 0 {
			key = ""
			for _, it := range its {
				if path.Clean(scalar(get(it, "path"))) == inVol {
					key = scalar(get(it, "key"))
				}
			}
			if key == "" {
				missing = append(missing, fmt.Sprintf("no item of %s.items has path %q", s.o.prefix+r.path, inVol))
				continue
			}
		}
		o, others := s.find(r.kind, r.name, s.o)
		if o == nil {
			a := fmt.Sprintf("%s %q", r.kind, r.name)
			if len(others) > 0 {
				a += fmt.Sprintf(" of namespace %q (there is one in namespace %q, %s)", s.o.namespace, others[0].namespace, where(others[0]))
			}
			absent = append(absent, a)
			src.refNode, src.refPath = r.nameNode, r.namePath
			continue
		}
		for _, dk := range dataKeys(r.kind) {
			d := get(o.node, dk.field)
			if n := get(d, key); n != nil {
				src.obj, src.key, src.dataNode, src.base64 = o, key, n, dk.base64
				src.dataPath = dk.field + "." + key
				return src
			}
		}
		missing = append(missing, fmt.Sprintf("%s %q (%s) has no key %q%s", r.kind, r.name, where(o), key, haveKeys(o)))
	}
	switch {
	case len(absent) > 0:
		src.absent = strings.Join(absent, " and ")
	case len(missing) > 0:
		src.missing = strings.Join(missing, "; ")
	default:
		src.skip = "a projected volume with no ConfigMap or Secret"
	}
	return src
}

type dataKey struct {
	field  string
	base64 bool
}

func dataKeys(kind string) []dataKey {
	if kind == "Secret" {
		return []dataKey{{"stringData", false}, {"data", true}}
	}
	return []dataKey{{"data", false}, {"binaryData", true}}
}

// haveKeys lists an object's keys for a "has no key" message.
func haveKeys(o *object) string {
	var keys []string
	for _, dk := range dataKeys(o.kind) {
		d := get(o.node, dk.field)
		for i := 0; d != nil && d.Kind == yaml.MappingNode && i+1 < len(d.Content); i += 2 {
			keys = append(keys, d.Content[i].Value)
		}
	}
	if len(keys) == 0 {
		return " (it has none)"
	}
	if len(keys) > 8 {
		keys = append(keys[:8], "...")
	}
	return " (it has " + strings.Join(keys, ", ") + ")"
}

// text is the content of the file, and whether its lines are the
// manifest's lines after the value's first (a literal block scalar).
func (src source) text() ([]byte, bool, error) {
	n := src.dataNode
	if n.Kind != yaml.ScalarNode {
		return nil, false, errors.New("not a string")
	}
	if src.base64 {
		b, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(n.Value), ""))
		if err != nil {
			return nil, false, fmt.Errorf("not base64: %v", err)
		}
		return b, false, nil
	}
	return []byte(n.Value), n.Style&yaml.LiteralStyle != 0, nil
}

// validateConfig validates the configuration with config.Parse, once per
// value, leaving out what only the pod can have: the files it names
// (files checks that they are mounted) and the values of variables the
// manifests do not give.
func (s *sidecar) validateConfig(src source, text []byte, literal bool) {
	if s.validated[src.dataNode] {
		return
	}
	s.validated[src.dataNode] = true
	_, err := config.Parse(text, s.env.lookup, protocols.Schemas())
	if err == nil {
		return
	}
	var errs config.Errors
	if !errors.As(err, &errs) {
		s.add(src.obj.problem(Error, src.dataPath, src.dataNode, "%v", err))
		return
	}
	var root yaml.Node
	_ = yaml.Unmarshal(text, &root)
	fs := readFields(&root, s.env)
	for _, e := range errs {
		if strings.HasPrefix(e.Msg, "no such file ") {
			continue
		}
		if f := fs.get(e.Path); f != nil && f.node.Kind == yaml.ScalarNode && s.env.refersUnknown(f.raw) {
			continue
		}
		p := src.obj.problem(Error, src.dataPath, src.dataNode, "%s", e.Msg)
		if e.Path != "" {
			p.Msg = e.Path + ": " + e.Msg
		}
		p.Hint = e.Hint
		switch {
		case src.obj.sources[src.dataNode] != "":
			p.Line = e.Line
		case e.Line > 0 && literal:
			p.Line = src.dataNode.Line + e.Line
		case e.Line > 0:
			p.Msg += fmt.Sprintf(" (line %d of the value, which starts on line %d)", e.Line, src.dataNode.Line)
			p.Line = 0
		}
		s.add(p)
	}
}

// imageFiles are in attache's image (docs/image.md).
var imageFiles = []string{"/etc/ssl/certs/ca-certificates.crt"}

// files checks that every file the configuration names is on a volume,
// and in its ConfigMap or Secret when that is among the files. Files in
// the service-account directory are left to token.
func (s *sidecar) files(fs *fields) {
	// Fields are grouped: one problem per directory with nothing mounted,
	// and per file missing from its ConfigMap or Secret.
	type group struct {
		m      *mount // nil: nothing mounted at dir
		dir    string
		file   string // the (first) file
		why    string // what is wrong with it on m
		fields []string
	}
	var groups []*group
	find := func(g group) *group {
		for _, x := range groups {
			if x.m == g.m && x.dir == g.dir && (g.m == nil || x.file == g.file && x.why == g.why) {
				return x
			}
		}
		groups = append(groups, &g)
		return &g
	}
	for _, f := range fs.order {
		if !f.file || !f.known || f.value == "" || slices.Contains(imageFiles, f.value) {
			continue
		}
		if !path.IsAbs(f.value) {
			mn, mp := s.mountsNode()
			s.add(s.o.problem(Error, mp, mn, "%s is %q, a relative path: give an absolute path on a volume", f.path, f.value))
			continue
		}
		file := path.Clean(f.value)
		m := s.mountFor(file)
		if m == nil {
			if !under(file, config.DefaultServiceAccountDir) {
				g := find(group{dir: path.Dir(file), file: file})
				g.fields = append(g.fields, f.path)
			}
			continue
		}
		if src := s.lookupFile(m, file); src.missing != "" {
			g := find(group{m: m, file: file, why: src.missing})
			g.fields = append(g.fields, f.path)
		}
		s.subPath(m, f.path)
	}
	mn, mp := s.mountsNode()
	for _, g := range groups {
		names := g.fields[0]
		if n := len(g.fields); n > 1 {
			names = strings.Join(g.fields[:n-1], ", ") + " and " + g.fields[n-1]
		}
		switch {
		case g.m != nil:
			s.add(s.o.problem(Error, g.m.path, g.m.node, "%s %s %s, but %s", names, verb(len(g.fields)), g.file, g.why))
		case len(g.fields) == 1:
			s.add(s.o.problem(Error, mp, mn, "%s names %s but nothing is mounted at %s", names, g.file, g.dir))
		default:
			s.add(s.o.problem(Error, mp, mn, "%s name files in %s but nothing is mounted there", names, g.dir))
		}
	}
}

func verb(n int) string {
	if n == 1 {
		return "names"
	}
	return "name"
}

// subPath warns, once per mount, that a ConfigMap or Secret mounted with
// subPath is never updated: attache follows changes to its config and
// files, and would not see an edit or a renewed certificate.
func (s *sidecar) subPath(m *mount, what string) {
	if m.subPath == "" || s.warned[m] {
		return
	}
	if refs, _ := volumeRefs(s.volumes[m.name]); len(refs) == 0 {
		return
	}
	s.warned[m] = true
	s.add(s.o.problem(Warning, m.path+".subPath", get(m.node, "subPath"), "%s is mounted with subPath, which the kubelet never updates: attache will not see a change until the pod restarts; mount the directory", what))
}

// probeFor is the probe server path each probe should ask.
var probeFor = []struct{ probe, path, which string }{
	{"startupProbe", "/started", "started"},
	{"readinessProbe", "/ready", "ready"},
	{"livenessProbe", "/health", "health"},
}

// probes checks the container's probes against the probe server and the
// admin server of the configuration.
func (s *sidecar) probes(fs *fields) {
	probeAddr, probeField := fs.value("probes.address", "")
	adminAddr, _ := fs.value("admin.address", config.DefaultAdminAddress)
	probeKnown := probeField == nil || probeField.known
	for _, pf := range probeFor {
		n := get(s.ct.node, pf.probe)
		pp := s.ct.path + "." + pf.probe
		if n == nil {
			if pf.probe == "startupProbe" && s.ct.init {
				s.add(s.o.problem(Warning, s.ct.path, s.ct.node, "no startupProbe: the application starts as soon as attache's process does, before its listeners are bound; probe /started"))
			}
			continue
		}
		var which string
		switch {
		case get(n, "httpGet") != nil:
			h := get(n, "httpGet")
			which = strings.TrimPrefix(scalar(get(h, "path")), "/")
			if !probeKnown {
				continue
			}
			if probeAddr == "" {
				s.add(s.o.problem(Error, pp+".httpGet", h, "the config has no probes.address, so nothing serves this probe (the admin server is on loopback, which the kubelet cannot reach)"))
				continue
			}
			host, port, _ := net.SplitHostPort(probeAddr)
			if loopback(host) {
				s.add(s.o.problem(Error, pp+".httpGet", h, "probes.address %s binds loopback only, but the kubelet probes the pod's IP; use 0.0.0.0:%s", probeAddr, port))
			}
			if got, ok := s.containerPort(get(h, "port")); !ok {
				s.add(s.o.problem(Error, pp+".httpGet.port", get(h, "port"), "no port named %q in the container's ports", scalar(get(h, "port"))))
			} else if got != port {
				s.add(s.o.problem(Error, pp+".httpGet.port", get(h, "port"), "%s, but the probe server listens on %s (probes.address)", got, probeAddr))
			}
			if sch := scalar(get(h, "scheme")); sch != "" && sch != "HTTP" {
				s.add(s.o.problem(Error, pp+".httpGet.scheme", get(h, "scheme"), "%s, but the probe server speaks plain HTTP", sch))
			}
			if p := "/" + which; p != "/started" && p != "/ready" && p != "/health" {
				s.add(s.o.problem(Error, pp+".httpGet.path", get(h, "path"), "%q: the probe server serves only /started, /ready and /health", scalar(get(h, "path"))))
				continue
			}
		case get(n, "exec") != nil:
			cn := get(get(n, "exec"), "command")
			cmd := strs(cn)
			if len(cmd) < 3 || path.Base(cmd[0]) != "attache" || cmd[1] != "probe" || !slices.Contains([]string{"ready", "health", "started"}, cmd[2]) {
				s.add(s.o.problem(Error, pp+".exec.command", cn, "want /attache probe ready|health|started [--admin ADDR]: the image has no shell or curl"))
				continue
			}
			which = cmd[2]
			if !strings.Contains(cmd[0], "/") {
				s.add(s.o.problem(Warning, pp+".exec.command[0]", items(cn)[0], "%q is looked up in PATH, which does not hold / where attache's image has the binary; use /attache", cmd[0]))
			}
			asked := config.DefaultAdminAddress
			for i := 3; i < len(cmd); i++ {
				if v, ok := strings.CutPrefix(strings.TrimLeft(cmd[i], "-"), "admin="); ok {
					asked = v
				} else if strings.TrimLeft(cmd[i], "-") == "admin" && i+1 < len(cmd) {
					asked = cmd[i+1]
					i++
				}
			}
			adminOn := adminAddr != config.AdminOff
			if (adminOn && serves(adminAddr, asked)) || (probeAddr != "" && serves(probeAddr, asked)) || !probeKnown {
				break
			}
			have := "admin.address is off"
			if adminOn {
				have = "the admin server is at " + adminAddr
			}
			if probeAddr != "" {
				have += " and the probe server at " + probeAddr
			} else {
				have += " and there is no probes.address"
			}
			s.add(s.o.problem(Error, pp+".exec.command", cn, "asks %s, where nothing listens: %s", asked, have))
		case get(n, "tcpSocket") != nil:
			s.add(s.o.problem(Warning, pp+".tcpSocket", get(n, "tcpSocket"), "a tcpSocket probe only sees a port open; use httpGet on the probe server's /%s or exec /attache probe %s", pf.which, pf.which))
			continue
		default:
			s.add(s.o.problem(Error, pp, n, "attache answers httpGet probes on the probe server and exec probes with /attache probe, nothing else"))
			continue
		}
		switch {
		case pf.probe == "livenessProbe" && which == "ready":
			s.add(s.o.problem(Warning, pp, n, "a liveness probe on /ready restarts attache whenever a dependency is down; use /health"))
		case pf.probe == "startupProbe" && which != "started":
			s.add(s.o.problem(Warning, pp, n, "a startup probe on /%s lets the application start before attache has bound its listeners; use /started", which))
		}
	}
}

// containerPort is a probe's port as a number, a named port resolved
// through the attache container's ports.
func (s *sidecar) containerPort(n *yaml.Node) (string, bool) {
	v := scalar(n)
	if _, err := strconv.Atoi(v); err == nil {
		return v, true
	}
	for _, p := range items(get(s.ct.node, "ports")) {
		if scalar(get(p, "name")) == v {
			return scalar(get(p, "containerPort")), true
		}
	}
	return "", false
}

func loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// serves reports whether a server listening on listen answers a request
// to addr from inside the pod.
func serves(listen, addr string) bool {
	lh, lp, err1 := net.SplitHostPort(listen)
	ah, ap, err2 := net.SplitHostPort(addr)
	if err1 != nil || err2 != nil || lp != ap {
		return false
	}
	if lh == ah {
		return true
	}
	ip := net.ParseIP(lh)
	return lh == "" || (ip != nil && ip.IsUnspecified()) || (loopback(lh) && loopback(ah))
}

// token checks that the service-account token is there for the clusters
// that need it: kubernetes_api ones, and Kubernetes discovery without a
// kubeconfig (the pod's own API server).
func (s *sidecar) token(fs *fields) {
	type need struct{ why, file string }
	var needs []need
	for i := range fs.count("clusters") {
		cp := fmt.Sprintf("clusters[%d]", i)
		if k := fs.get(cp + ".kubernetes_api"); k != nil {
			tok, tf := fs.value(cp+".kubernetes_api.token_file", config.DefaultServiceAccountDir+"/token")
			if tf == nil || tf.known {
				needs = append(needs, need{cp + ".kubernetes_api", tok})
			}
		}
		if k := fs.get(cp + ".discovery.kubernetes"); k != nil {
			if kc, _ := fs.value(cp+".discovery.kubernetes.kubeconfig", ""); kc == "" {
				needs = append(needs, need{cp + ".discovery.kubernetes", config.DefaultServiceAccountDir + "/token"})
			}
		}
	}
	if fs.get("zone.node_label") != nil {
		if kc, _ := fs.value("zone.kubeconfig", ""); kc == "" {
			needs = append(needs, need{"zone.node_label", config.DefaultServiceAccountDir + "/token"})
		}
	}
	for _, f := range fs.order {
		if f.file && f.known && under(path.Clean(f.value), config.DefaultServiceAccountDir) && !strings.Contains(f.path, ".kubernetes_api.") {
			needs = append(needs, need{f.path, f.value})
		}
	}
	i := slices.IndexFunc(needs, func(nd need) bool {
		// Elsewhere, or on a volume of the container's own: files checks it.
		return under(path.Clean(nd.file), config.DefaultServiceAccountDir) && s.mountFor(path.Clean(nd.file)) == nil
	})
	if i < 0 {
		return
	}
	nd := needs[i]
	if am := get(s.spec, "automountServiceAccountToken"); am != nil {
		if scalar(am) == "false" {
			s.add(s.o.problem(Error, s.sp+".automountServiceAccountToken", am, "false, and the attache container mounts nothing at %s, but %s reads the service-account token there; mount a projected token volume in the attache container (attache inject does)", config.DefaultServiceAccountDir, nd.why))
		}
		return
	}
	saNode := get(s.spec, "serviceAccountName")
	saPath := s.sp + ".serviceAccountName"
	if saNode == nil {
		saNode, saPath = get(s.spec, "serviceAccount"), s.sp+".serviceAccount"
	}
	sa := scalar(saNode)
	if sa == "" {
		sa, saNode, saPath = "default", s.spec, s.sp
	}
	o, _ := s.find("ServiceAccount", sa, s.o)
	if o == nil || scalar(get(o.node, "automountServiceAccountToken")) != "false" {
		return
	}
	s.add(s.o.problem(Error, saPath, saNode, "ServiceAccount %q (%s) has automountServiceAccountToken: false, and neither the pod sets it true nor the attache container mounts anything at %s, but %s reads the service-account token there", sa, where(o), config.DefaultServiceAccountDir, nd.why))
}

// rbac checks, for each Kubernetes discovery of the pod's own API server,
// that the RBAC objects among the files let the pod's ServiceAccount list
// and watch EndpointSlices in the namespace it names. When the files bind
// nothing to the ServiceAccount, or a bound role is not among them, the
// RBAC is elsewhere and nothing is said.
func (s *sidecar) rbac(fs *fields) {
	sa := scalar(get(s.spec, "serviceAccountName"))
	saNode, saPath := get(s.spec, "serviceAccountName"), s.sp+".serviceAccountName"
	if sa == "" {
		sa, saNode, saPath = "default", s.spec, s.sp
	}
	var bindings []*object
	for _, kind := range []string{"RoleBinding", "ClusterRoleBinding"} {
		for key, objs := range s.index {
			if !strings.HasPrefix(key, kind+"/") {
				continue
			}
			for _, b := range objs {
				for _, subj := range items(get(b.node, "subjects")) {
					ns := scalar(get(subj, "namespace"))
					if ns == "" && kind == "RoleBinding" {
						ns = b.namespace
					}
					if scalar(get(subj, "kind")) == "ServiceAccount" && scalar(get(subj, "name")) == sa && ns == s.o.namespace {
						bindings = append(bindings, b)
						break
					}
				}
			}
		}
	}
	if len(bindings) == 0 {
		return
	}
	slices.SortFunc(bindings, func(a, b *object) int { return strings.Compare(where(a), where(b)) })
	reported := map[string]bool{} // namespaces
	for i := range fs.count("clusters") {
		kp := fmt.Sprintf("clusters[%d].discovery.kubernetes", i)
		if fs.get(kp) == nil {
			continue
		}
		if kc, _ := fs.value(kp+".kubeconfig", ""); kc != "" {
			continue
		}
		ns, f := fs.value(kp+".namespace", "")
		if f == nil || !f.known || ns == "" || reported[ns] {
			continue
		}
		allowed, unknown := false, false
		var names []string
		for _, b := range bindings {
			names = append(names, fmt.Sprintf("%s (%s)", b.id(), where(b)))
			if b.kind == "RoleBinding" && b.namespace != ns {
				continue
			}
			ref := get(b.node, "roleRef")
			kind, name := scalar(get(ref, "kind")), scalar(get(ref, "name"))
			var role *object
			for _, r := range s.index[kind+"/"+name] {
				if kind == "ClusterRole" || r.namespace == b.namespace {
					role = r
				}
			}
			if role == nil {
				unknown = true
				continue
			}
			if allowsEndpointSlices(role.node) {
				allowed = true
			}
		}
		if !allowed && !unknown {
			reported[ns] = true
			s.add(s.o.problem(Error, saPath, saNode, "%s watches EndpointSlices in namespace %q, but what the files bind to ServiceAccount %q (%s) does not allow list and watch on endpointslices (discovery.k8s.io) there",
				kp, ns, sa, strings.Join(names, ", ")))
		}
	}
}

// allowsEndpointSlices reports whether a Role's or ClusterRole's rules
// allow list and watch on EndpointSlices.
func allowsEndpointSlices(role *yaml.Node) bool {
	has := func(list []string, v string) bool { return slices.Contains(list, v) || slices.Contains(list, "*") }
	list, watch := false, false
	for _, r := range items(get(role, "rules")) {
		if !has(strs(get(r, "apiGroups")), "discovery.k8s.io") || !has(strs(get(r, "resources")), "endpointslices") {
			continue
		}
		verbs := strs(get(r, "verbs"))
		list = list || has(verbs, "list")
		watch = watch || has(verbs, "watch")
	}
	return list && watch
}

// ports checks that no other container of the pod declares a port that
// attache listens on: they share the pod's network namespace.
func (s *sidecar) ports(fs *fields) {
	type listen struct{ what, addr, port string }
	var ls []listen
	add := func(p, def string) {
		v, f := fs.value(p, def)
		if (f != nil && !f.known) || v == "" || v == config.AdminOff {
			return
		}
		if _, port, err := net.SplitHostPort(v); err == nil && port != "0" {
			ls = append(ls, listen{p, v, port})
		}
	}
	add("admin.address", config.DefaultAdminAddress)
	add("probes.address", "")
	for i := range fs.count("listeners") {
		add(fmt.Sprintf("listeners[%d].address", i), "")
	}
	for _, ct := range s.all {
		if ct.node == s.ct.node || (ct.init && scalar(get(ct.node, "restartPolicy")) != "Always") {
			continue
		}
		for j, p := range items(get(ct.node, "ports")) {
			if proto := scalar(get(p, "protocol")); proto != "" && proto != "TCP" {
				continue
			}
			cp := get(p, "containerPort")
			for _, l := range ls {
				if scalar(cp) == l.port {
					s.add(s.o.problem(Error, fmt.Sprintf("%s.ports[%d].containerPort", ct.path, j), cp,
						"%s is also attache's %s (%s): containers of a pod share its ports", l.port, l.what, l.addr))
				}
			}
		}
	}
}
