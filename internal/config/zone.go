package config

import (
	"fmt"
	"regexp"
)

// Zone says where the pod's zone comes from: exactly one of Name (written
// out, or ${VAR}), FromEnv (an environment variable, set from a pod label
// or annotation through the downward API) or NodeLabel (a label of the
// Node the pod runs on, read from the Kubernetes API; the node's name from
// the NodeNameEnv variable, set from spec.nodeName through the downward
// API). Parse resolves FromEnv into Name and NodeNameEnv into NodeName;
// a variable that is set but empty leaves them "" (the zone is unknown),
// one that is not set is an error.
type Zone struct {
	Name        string `yaml:"name"`
	FromEnv     string `yaml:"from_env"`
	NodeLabel   string `yaml:"node_label"`
	NodeNameEnv string `yaml:"node_name_env"` // default DefaultNodeNameEnv
	Kubeconfig  string `yaml:"kubeconfig"`    // node_label: default the pod's own API server

	NodeName string `yaml:"-"` // node_label: the node, from NodeNameEnv
}

// ZoneAware is a cluster's zone-aware routing: prefer endpoints in the
// pod's zone while it has enough healthy ones for its share of the
// traffic (see docs/discovery.md, "Zone-aware routing").
type ZoneAware struct {
	// MinHealthy is the number of healthy endpoints the local zone needs;
	// below it every zone is used. Default 1.
	MinHealthy int `yaml:"min_healthy"`
	// MinClusterSize: clusters with fewer endpoints ignore zones
	// (Envoy's min_cluster_size). Default 1.
	MinClusterSize int `yaml:"min_cluster_size"`
	// Callers names a cluster whose endpoints are the calling service's
	// pods (Envoy's local_cluster_name): their spread over zones is the
	// callers' share of the traffic. Default: assume they are spread
	// like this cluster's endpoints.
	Callers string `yaml:"callers"`
}

// Zone defaults.
const (
	DefaultNodeNameEnv     = "NODE_NAME"
	DefaultZoneLabel       = "topology.kubernetes.io/zone"
	DefaultConsulZoneMeta  = "zone"
	DefaultZoneMinHealthy  = 1
	DefaultZoneMinClusters = 1
)

// zoneName is a zone as Kubernetes labels and Consul meta write it: a label
// value of 1-63 characters.
var zoneName = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$`)

// labelKey is a Kubernetes label key: an optional DNS prefix and a name.
var labelKey = regexp.MustCompile(`^([a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$`)

// consulMetaKey is a key of Consul node meta.
var consulMetaKey = regexp.MustCompile(`^[A-Za-z0-9_-]{1,128}$`)

func checkZoneName(z string) error {
	if !zoneName.MatchString(z) {
		return fmt.Errorf("%q is not a zone name (1-63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit)", z)
	}
	return nil
}

// applyZone fills in the zone's defaults and resolves its environment
// variables through lookupEnv.
func (c *Config) applyZone(lookupEnv func(string) (string, bool)) Errors {
	var errs Errors
	for i := range c.Clusters {
		za := c.Clusters[i].ZoneAware
		if za == nil {
			continue
		}
		p := fmt.Sprintf("clusters[%d].zone_aware", i)
		if za.MinHealthy == 0 && !c.has(p+".min_healthy") {
			za.MinHealthy = DefaultZoneMinHealthy
		}
		if za.MinClusterSize == 0 && !c.has(p+".min_cluster_size") {
			za.MinClusterSize = DefaultZoneMinClusters
		}
	}
	z := c.Zone
	if z == nil {
		return nil
	}
	env := func(name string) (string, bool) {
		if lookupEnv == nil {
			return "", false
		}
		return lookupEnv(name)
	}
	errorf := func(path, format string, args ...any) {
		errs = append(errs, Error{Path: path, Line: c.Line(path), Msg: fmt.Sprintf(format, args...)})
	}
	given := 0
	for _, s := range []string{z.Name, z.FromEnv, z.NodeLabel} {
		if s != "" {
			given++
		}
	}
	if given != 1 {
		errorf("zone", "give exactly one of name, from_env and node_label")
		return errs
	}
	if z.NodeLabel == "" && (z.NodeNameEnv != "" || z.Kubeconfig != "") {
		f := "node_name_env"
		if z.Kubeconfig != "" {
			f = "kubeconfig"
		}
		errorf("zone."+f, "only with node_label")
	}
	switch {
	case z.Name != "":
		if err := checkZoneName(z.Name); err != nil {
			errorf("zone.name", "%v", err)
		}
	case z.FromEnv != "":
		if !validEnvName(z.FromEnv) {
			errorf("zone.from_env", "invalid environment variable name %q", z.FromEnv)
			break
		}
		v, ok := env(z.FromEnv)
		if !ok {
			errorf("zone.from_env", "environment variable %s is not set; set it from a pod label or annotation with the downward API (fieldRef metadata.labels['...'])", z.FromEnv)
			break
		}
		// Set but empty (the pod lacks the label, or attache validate
		// checks a manifest that sets it from the downward API): the
		// zone is unknown, which the app logs.
		if v == "" {
			break
		}
		if err := checkZoneName(v); err != nil {
			errorf("zone.from_env", "environment variable %s: %v", z.FromEnv, err)
			break
		}
		z.Name = v
	case z.NodeLabel != "":
		if !labelKey.MatchString(z.NodeLabel) {
			errorf("zone.node_label", "%q is not a label key like %s", z.NodeLabel, DefaultZoneLabel)
		}
		if z.NodeNameEnv == "" {
			z.NodeNameEnv = DefaultNodeNameEnv
		}
		if !validEnvName(z.NodeNameEnv) {
			errorf("zone.node_name_env", "invalid environment variable name %q", z.NodeNameEnv)
			break
		}
		var ok bool
		if z.NodeName, ok = env(z.NodeNameEnv); !ok {
			errorf("zone.node_label", "environment variable %s is not set; set it from spec.nodeName with the downward API (fieldRef)", z.NodeNameEnv)
		}
	}
	return errs
}

// zoneAware validates a cluster's zone_aware.
func (v *validator) zoneAware(p string, cl *Cluster) {
	za := cl.ZoneAware
	if za == nil {
		return
	}
	p += ".zone_aware"
	if v.c.Zone == nil {
		v.errorf(p, "needs the pod's zone: set the top-level zone (name, from_env or node_label)")
	}
	if za.MinHealthy < 1 {
		v.errorf(p+".min_healthy", "must be at least 1")
	}
	if za.MinClusterSize < 1 {
		v.errorf(p+".min_cluster_size", "must be at least 1")
	}
	switch {
	case za.Callers == "":
	case za.Callers == cl.Name:
		v.errorf(p+".callers", "names the cluster itself; name the cluster of the calling service's own pods")
	case v.c.Cluster(za.Callers) == nil:
		v.errorf(p+".callers", "no cluster %q", za.Callers)
	}
}

// consulZoneMeta validates discovery.consul.zone_meta.
func (v *validator) consulZoneMeta(p string, d *ConsulDiscovery) {
	if d.ZoneMeta != "" && !consulMetaKey.MatchString(d.ZoneMeta) {
		v.errorf(p+".zone_meta", "%q is not a Consul meta key (1-128 letters, digits, '-' or '_')", d.ZoneMeta)
	}
}
