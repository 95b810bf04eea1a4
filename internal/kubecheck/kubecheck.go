// Package kubecheck checks Kubernetes manifests that run attache as a
// sidecar. Across a set of files it finds every workload's attache
// container and the ConfigMap (or Secret) its configuration is mounted
// from, validates that configuration with internal/config, and checks the
// wiring between the two: the --config path is mounted, every file the
// configuration names lies on a volume, probes reach the probe server (or
// run `attache probe`), a native sidecar has restartPolicy: Always, the
// service-account token is there for Kubernetes discovery and the
// kubernetes_api cluster, RBAC among the files lets Kubernetes discovery
// watch EndpointSlices, and no other container claims a port attache
// listens on. A kustomization.yaml among the files is applied as far as
// matching needs: its namespace, and the objects its generators make.
//
// Manifests are read as yaml.v3 nodes, so each Problem names its file,
// document, field path and line; errors in an embedded configuration are
// given at their line in the manifest when the value is a literal block
// scalar (data: {attache.yaml: |}).
package kubecheck

import (
	"fmt"
	"path/filepath"
	"sort"
	"strings"

	"github.com/attache-proxy/attache/internal/config"
)

// Severity says whether a Problem fails validation.
type Severity int

const (
	Error   Severity = iota // the pod would not work as written
	Warning                 // it works, but not as well as it should
	Note                    // a fact worth knowing (a classic sidecar)
)

// Problem is one finding, about one field of one object.
type Problem struct {
	File     string
	Doc      int    // 1-based document index; 0 for the whole file
	Object   string // Kind/name
	Path     string // field path inside the object, "spec.template.spec.volumes[0]"
	Line     int    // 0 when unknown
	Severity Severity
	Msg      string
	Hint     string // follows the line, as in config errors
}

func (p Problem) String() string {
	var b strings.Builder
	b.WriteString(p.File)
	if p.Doc > 0 {
		fmt.Fprintf(&b, ": document %d", p.Doc)
		if p.Object != "" {
			fmt.Fprintf(&b, " (%s)", p.Object)
		}
	}
	b.WriteString(": ")
	switch p.Severity {
	case Warning:
		b.WriteString("warning: ")
	case Note:
		b.WriteString("note: ")
	}
	// The field, message, line and hint read as in a config error.
	b.WriteString(config.Error{Path: p.Path, Line: p.Line, Msg: p.Msg, Hint: p.Hint}.Error())
	return b.String()
}

// File is one manifest file's name (as it is to be reported) and content.
type File struct {
	Name string
	Data []byte
}

// Sidecar is one attache container that was checked.
type Sidecar struct {
	File      string
	Doc       int
	Object    string // Kind/name of the workload
	Container string // field path of the container
	Config    string // where its configuration comes from: `ConfigMap/x key attache.yaml`; "" when not found
}

// Report is what Check found.
type Report struct {
	Sidecars []Sidecar
	Problems []Problem // in file order, then document, then line
}

// Errors counts the Problems of severity Error.
func (r Report) Errors() int {
	n := 0
	for _, p := range r.Problems {
		if p.Severity == Error {
			n++
		}
	}
	return n
}

// Check reads every file's objects, then checks each workload that has an
// attache container against the objects of all files (its ConfigMap may be
// in another file). A ConfigMap or Secret that the configuration is
// mounted from must be among the files: otherwise the configuration cannot
// be checked, which is an Error. Secrets and ConfigMaps of other volumes
// (certificates a controller writes) are checked only when present. The
// files a Kustomization's generators name are read from disk, relative to
// the Kustomization's file and never outside its directory.
func Check(files []File) Report {
	c := &checker{index: map[string][]*object{}, validated: map[any]bool{}}
	order := map[string]int{}
	for i, f := range files {
		order[f.Name] = i
		objs, probs := readObjects(f.Name, f.Data)
		c.objs = append(c.objs, objs...)
		c.probs = append(c.probs, probs...)
	}
	c.kustomize()
	for _, o := range c.objs {
		switch o.kind {
		case "ConfigMap", "Secret", "ServiceAccount", "Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding":
			k := o.kind + "/" + o.name
			c.index[k] = append(c.index[k], o)
		}
	}
	for _, o := range c.objs {
		c.workload(o)
	}
	if len(c.sidecars) == 0 && c.errorsBefore() == 0 {
		name := "the given files"
		if len(files) == 1 {
			name = files[0].Name
		}
		c.probs = append(c.probs, Problem{File: name, Severity: Error,
			Msg: "no workload with an attache container (one named \"attache\", or running an attache image)"})
	}
	sort.SliceStable(c.probs, func(i, j int) bool {
		a, b := c.probs[i], c.probs[j]
		if a.File != b.File {
			return order[a.File] < order[b.File]
		}
		if a.Doc != b.Doc {
			return a.Doc < b.Doc
		}
		return a.Line < b.Line
	})
	return Report{Sidecars: c.sidecars, Problems: c.probs}
}

func (c *checker) errorsBefore() int {
	return Report{Problems: c.probs}.Errors()
}

type checker struct {
	objs      []*object
	index     map[string][]*object // Kind/name: ConfigMaps, Secrets, ServiceAccounts
	probs     []Problem
	sidecars  []Sidecar
	validated map[any]bool // configuration values already validated
}

func (c *checker) add(p Problem) { c.probs = append(c.probs, p) }

// find is the object kind/name in from's namespace ("" matches ""), and
// the objects of that name in other namespaces when there is none. Of
// several, the one nearest to from wins: in its file, then in its
// directory (a kustomization's), then the first given.
func (c *checker) find(kind, name string, from *object) (*object, []*object) {
	var best *object
	var others []*object
	rank := func(o *object) int {
		switch {
		case o.file == from.file:
			return 0
		case filepath.Dir(o.file) == filepath.Dir(from.file):
			return 1
		}
		return 2
	}
	for _, o := range c.index[kind+"/"+name] {
		if o.namespace != from.namespace {
			others = append(others, o)
			continue
		}
		if best == nil || rank(o) < rank(best) {
			best = o
		}
	}
	if best != nil {
		return best, nil
	}
	return nil, others
}

// where names an object's place: `deploy/cm.yaml, document 1`.
func where(o *object) string {
	if o.generated {
		return fmt.Sprintf("generated by %s, document %d", o.file, o.doc)
	}
	return fmt.Sprintf("%s, document %d", o.file, o.doc)
}
