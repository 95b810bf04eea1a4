package config

import (
	"fmt"
	"slices"
	"sort"
	"strings"
)

// clusterFieldUse is who reads an optional cluster field: the listener
// protocols whose traffic it shapes. A field set where none of them uses
// its cluster would be accepted and ignored; validate refuses it instead.
// set reports a value other than the default, so that the rendered
// configuration (/config, defaults included) can be loaded again. by nil
// is every protocol but those that say they ignore the field (Ignorer).
var clusterFieldUse = []struct {
	field string
	by    []string // listener protocols
	why   string
	set   func(cl *Cluster) bool
}{
	{"balance", nil, "",
		func(cl *Cluster) bool { return cl.Balance != DefaultBalance }},
	{"outlier_detection", nil, "",
		func(cl *Cluster) bool { return cl.OutlierDetection != nil && *cl.OutlierDetection != defaultOutlier }},
	{"zone_aware", nil, "",
		func(cl *Cluster) bool { return cl.ZoneAware != nil }},
}

var (
	defaultOutlier = OutlierDetection{ConsecutiveFailures: DefaultOutlierFailures,
		BaseEjectionTime: Duration(DefaultOutlierEjection), MaxEjectionPercent: DefaultOutlierMaxPercent}
)

// unusedFields refuses every field the file sets on a listener or cluster
// whose protocol never reads it. Clusters no listener uses are skipped.
func (v *validator) unusedFields() {
	c := v.c
	uses := c.clusterUses()
	for i := range c.Clusters {
		cl := &c.Clusters[i]
		p := fmt.Sprintf("clusters[%d]", i)
		v.healthCheckFields(p+".health_check", cl)
		protos := uses[cl.Name]
		if len(protos) == 0 {
			continue
		}
		for _, f := range clusterFieldUse {
			by, why := f.by, f.why
			if by == nil {
				by, why = v.s.readers(f.field, protos)
			}
			if f.set(cl) && !usedBy(protos, by) {
				v.errorf(p+"."+f.field, "not used by %s listeners (%s)", ProtocolList(protos), why)
			}
		}
		if by, _ := v.s.readers("balance", protos); cl.Balance == "ewma" && usedBy(protos, by) { // else refused above
			if others := without(protos, v.s.latencyTimers()); len(others) > 0 {
				v.errorf(p+".balance", "ewma is not honoured by %s listeners (only %s listeners time their requests or connections); use p2c or least_request", ProtocolList(others), strings.Join(v.s.latencyTimers(), " and "))
			}
		}
		if o := cl.OutlierDetection; o != nil && o.Consecutive5xx != 0 && !protos["http"] {
			v.errorf(p+".outlier_detection.consecutive_5xx", "not used by %s listeners (it counts HTTP responses)", ProtocolList(protos))
		}
		if by, _ := v.s.readers("balance", protos); usedBy(protos, by) {
			v.endpointWeights(p, cl)
		}
	}
}

// endpointWeights refuses weights a balance policy does not read
// (round_robin and first take endpoints in turn or in order; a redis ring
// reads them: a cluster that a protocol ignoring balance uses does not
// come here).
func (v *validator) endpointWeights(p string, cl *Cluster) {
	if cl.Balance != "round_robin" && cl.Balance != "first" {
		return
	}
	for j, e := range cl.Endpoints {
		if e.Weight != 1 {
			v.errorf(fmt.Sprintf("%s.endpoints[%d]", p, j), "weight %d is not used by balance %s; use weighted, random, least_request, p2c or ring_hash", e.Weight, cl.Balance)
		}
	}
}

// healthCheckFields refuses the settings of one check type on another.
func (v *validator) healthCheckFields(p string, cl *Cluster) {
	h := cl.HealthCheck
	if h == nil {
		return
	}
	for _, f := range []struct {
		name string
		set  bool
		typ  string
	}{
		{"path", h.Path != "", "http"},
		{"host", h.Host != "", "http"},
		{"expect_status", len(h.ExpectStatus) > 0, "http"},
		{"user", h.User != "", "postgres"},
		{"database", h.Database != "", "postgres"},
		{"password", h.Password != "", "postgres"},
	} {
		if f.set && h.Type != f.typ {
			e := Error{Path: p + "." + f.name, Line: v.c.Line(p + "." + f.name), Msg: fmt.Sprintf("not used by a %s check (only type %s)", h.Type, f.typ)}
			if h.Type == "redis" && f.name == "password" {
				e.Hint = "a redis check uses redis.username and redis.password"
			}
			v.errs = append(v.errs, e)
		}
	}
}

// without returns the protocols of protos not in by.
func without(protos map[string]bool, by []string) map[string]bool {
	out := map[string]bool{}
	for p := range protos {
		if !slices.Contains(by, p) {
			out[p] = true
		}
	}
	return out
}

func usedBy(protos map[string]bool, by []string) bool {
	for _, b := range by {
		if protos[b] {
			return true
		}
	}
	return false
}

// ProtocolList names the protocols of a set, sorted: "redis and tcp"
// (for "not used by ... listeners").
func ProtocolList(protos map[string]bool) string {
	var s []string
	for p := range protos {
		s = append(s, p)
	}
	sort.Strings(s)
	return strings.Join(s, " and ")
}
