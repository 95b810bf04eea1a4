package config

import (
	"testing"
)

func envOf(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestZoneEndpointForms(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]Endpoint{
		"10.0.0.1:80 zone=us-east-1a":            {Address: "10.0.0.1:80", Weight: 1, Zone: "us-east-1a"},
		"10.0.0.1:80 weight=2 zone=europe-west1": {Address: "10.0.0.1:80", Weight: 2, Zone: "europe-west1"},
		"[::1]:80 zone=a weight=3":               {Address: "[::1]:80", Weight: 3, Zone: "a"},
	} {
		var e Endpoint
		if err := e.decodeScalar(in); err != nil || e != want {
			t.Errorf("%q: got %+v, %v; want %+v", in, e, err, want)
		}
		var back Endpoint
		if err := back.decodeScalar(e.String()); err != nil || back != e {
			t.Errorf("%q: round trip through %q gave %+v, %v", in, e.String(), back, err)
		}
	}
	for in, want := range map[string]string{
		"h:1 zone=":     `endpoint "h:1 zone=": zone "" is not a zone name (1-63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit)`,
		"h:1 zone=-a":   `endpoint "h:1 zone=-a": zone "-a" is not a zone name (1-63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit)`,
		"h:1 zone=a/b":  `endpoint "h:1 zone=a/b": zone "a/b" is not a zone name (1-63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit)`,
		"h:1 region=eu": `endpoint "h:1 region=eu": unknown option "region=eu" (want weight=N or zone=NAME)`,
	} {
		var e Endpoint
		if err := e.decodeScalar(in); err == nil || err.Error() != want {
			t.Errorf("%q: got %v, want %q", in, err, want)
		}
	}
}

func TestZoneParseEndpointsFile(t *testing.T) {
	t.Parallel()
	eps, err := ParseEndpoints("eps.yaml", []byte("- 10.0.0.1:80 zone=a\n- 10.0.0.2:80 weight=2\n"))
	if err != nil {
		t.Fatal(err)
	}
	if eps[0].Zone != "a" || eps[1].Zone != "" || eps[1].Weight != 2 {
		t.Errorf("got %+v", eps)
	}
}

func TestZoneConfig(t *testing.T) {
	t.Parallel()
	const cl = "listeners: [{name: l, address: \"127.0.0.1:7000\", cluster: c}]\nclusters: [{name: c, endpoints: [\"h:1 zone=a\"], zone_aware: {}}]\n"
	for _, tc := range []struct {
		name, yaml string
		env        map[string]string
		want       Zone
	}{
		{"name", cl + "zone: {name: us-east-1a}", nil, Zone{Name: "us-east-1a"}},
		{"name from ${VAR}", cl + "zone: {name: \"${Z}\"}", map[string]string{"Z": "b"}, Zone{Name: "b"}},
		{"from_env", cl + "zone: {from_env: ZONE}", map[string]string{"ZONE": "us-east-1c"}, Zone{Name: "us-east-1c", FromEnv: "ZONE"}},
		{"node_label", cl + "zone: {node_label: topology.kubernetes.io/zone}", map[string]string{"NODE_NAME": "node-7"},
			Zone{NodeLabel: "topology.kubernetes.io/zone", NodeNameEnv: "NODE_NAME", NodeName: "node-7"}},
		{"from_env set but empty", cl + "zone: {from_env: ZONE}", map[string]string{"ZONE": ""}, Zone{FromEnv: "ZONE"}},
		{"node name set but empty", cl + "zone: {node_label: zone}", map[string]string{"NODE_NAME": ""}, Zone{NodeLabel: "zone", NodeNameEnv: "NODE_NAME"}},
		{"node_label other env", cl + "zone: {node_label: zone, node_name_env: MY_NODE}", map[string]string{"MY_NODE": "n1"},
			Zone{NodeLabel: "zone", NodeNameEnv: "MY_NODE", NodeName: "n1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, err := parse([]byte(tc.yaml), envOf(tc.env))
			if err != nil {
				t.Fatal(err)
			}
			if *c.Zone != tc.want {
				t.Errorf("zone: got %+v, want %+v", *c.Zone, tc.want)
			}
			za := c.Clusters[0].ZoneAware
			if za == nil || za.MinHealthy != 1 || za.MinClusterSize != 1 {
				t.Errorf("zone_aware defaults: got %+v, want min_healthy 1, min_cluster_size 1", za)
			}
		})
	}
}

func TestZoneBadValues(t *testing.T) {
	t.Parallel()
	const base = "listeners: [{name: l, address: \"127.0.0.1:7000\", cluster: c}]\n"
	const za = base + "clusters: [{name: c, endpoints: [\"h:1\"], zone_aware: {}}]\n"
	for _, tc := range []struct {
		name, yaml string
		env        map[string]string
		want       string
	}{
		{"zone_aware without zone", za, nil,
			"clusters[0].zone_aware: needs the pod's zone: set the top-level zone (name, from_env or node_label) (line 2)"},
		{"two sources", za + "zone: {name: a, from_env: ZONE}", map[string]string{"ZONE": "b"},
			"zone: give exactly one of name, from_env and node_label (line 3)"},
		{"no source", za + "zone: {}", nil,
			"zone: give exactly one of name, from_env and node_label (line 3)"},
		{"bad name", za + "zone: {name: \"us east\"}", nil,
			`zone.name: "us east" is not a zone name (1-63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit) (line 3)`},
		{"env unset", za + "zone: {from_env: ZONE}", nil,
			"zone.from_env: environment variable ZONE is not set; set it from a pod label or annotation with the downward API (fieldRef metadata.labels['...']) (line 3)"},
		{"env bad value", za + "zone: {from_env: ZONE}", map[string]string{"ZONE": "a b"},
			`zone.from_env: environment variable ZONE: "a b" is not a zone name (1-63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit) (line 3)`},
		{"env bad name", za + "zone: {from_env: \"1ZONE\"}", nil,
			`zone.from_env: invalid environment variable name "1ZONE" (line 3)`},
		{"node name unset", za + "zone: {node_label: topology.kubernetes.io/zone}", nil,
			"zone.node_label: environment variable NODE_NAME is not set; set it from spec.nodeName with the downward API (fieldRef) (line 3)"},
		{"bad label", za + "zone: {node_label: \"topology kubernetes\"}", map[string]string{"NODE_NAME": "n"},
			`zone.node_label: "topology kubernetes" is not a label key like topology.kubernetes.io/zone (line 3)`},
		{"node_name_env without node_label", za + "zone: {name: a, node_name_env: N}", nil,
			"zone.node_name_env: only with node_label (line 3)"},
		{"kubeconfig without node_label", za + "zone: {name: a, kubeconfig: /k}", nil,
			"zone.kubeconfig: only with node_label (line 3)"},
		{"kubeconfig missing", za + "zone: {node_label: zone, kubeconfig: /nonexistent/kc}", map[string]string{"NODE_NAME": "n"},
			`zone.kubeconfig: no such file "/nonexistent/kc" (line 3)`},
		{"unknown field", za + "zone: {nmae: a}", nil,
			`zone.nmae: unknown field (line 3); did you mean "name"?`},
		{"min_healthy", base + "clusters: [{name: c, endpoints: [\"h:1\"], zone_aware: {min_healthy: 0}}]\nzone: {name: a}", nil,
			"clusters[0].zone_aware.min_healthy: must be at least 1 (line 2)"},
		{"min_cluster_size", base + "clusters: [{name: c, endpoints: [\"h:1\"], zone_aware: {min_cluster_size: -1}}]\nzone: {name: a}", nil,
			"clusters[0].zone_aware.min_cluster_size: must be at least 1 (line 2)"},
		{"zone_aware unknown field", base + "clusters: [{name: c, endpoints: [\"h:1\"], zone_aware: {min_healty: 2}}]\nzone: {name: a}", nil,
			`clusters[0].zone_aware.min_healty: unknown field (line 2); did you mean "min_healthy"?`},
		{"callers unknown", base + "clusters: [{name: c, endpoints: [\"h:1\"], zone_aware: {callers: me}}]\nzone: {name: a}", nil,
			`clusters[0].zone_aware.callers: no cluster "me" (line 2)`},
		{"callers itself", base + "clusters: [{name: c, endpoints: [\"h:1\"], zone_aware: {callers: c}}]\nzone: {name: a}", nil,
			"clusters[0].zone_aware.callers: names the cluster itself; name the cluster of the calling service's own pods (line 2)"},
		{"consul zone_meta", base + "clusters: [{name: c, discovery: {consul: {service: s, zone_meta: \"a b\"}}}]", nil,
			`clusters[0].discovery.consul.zone_meta: "a b" is not a Consul meta key (1-128 letters, digits, '-' or '_') (line 2)`},
		{"endpoint zone", base + "clusters: [{name: c, endpoints: [\"h:1 zone=a:b\"]}]", nil,
			`clusters[0].endpoints[0]: endpoint "h:1 zone=a:b": zone "a:b" is not a zone name (1-63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit) (line 2)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := parse([]byte(tc.yaml), envOf(tc.env))
			if err == nil {
				t.Fatalf("got no error, want %q", tc.want)
			}
			if err.Error() != tc.want {
				t.Errorf("got %q\nwant %q", err, tc.want)
			}
		})
	}
}

// FuzzZoneEndpoint: an endpoint that decodes gives itself back through
// String, zone included.
func FuzzZoneEndpoint(f *testing.F) {
	for _, s := range []string{"h:1 zone=a", "h:1 weight=2 zone=us-east-1a", "[::1]:2 zone=a.b_c-d", "h:1 zone=", "h:1:2 n zone=a"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var e Endpoint
		if e.decodeScalar(s) != nil {
			return
		}
		if e.Zone != "" && checkZoneName(e.Zone) != nil {
			t.Fatalf("accepted zone %q", e.Zone)
		}
		var back Endpoint
		if err := back.decodeScalar(e.String()); err != nil || back != e {
			t.Fatalf("%q: round trip through %q gave %+v, %v", s, e.String(), back, err)
		}
	})
}
