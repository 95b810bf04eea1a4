package inject

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/attache-proxy/attache/internal/config"
	"github.com/attache-proxy/attache/internal/protocols"
)

// ReadConfig validates a configuration file's content with the same rules
// as attache validate and returns the Facts the sidecar's spec needs.
// Problems that only the pod can fix (the kubernetes_api cluster's token,
// CA and KUBERNETES_SERVICE_* variables, which exist only in a pod) are
// not counted; every other problem is returned as config.Errors.
func ReadConfig(data []byte) (Facts, error) {
	cfg, err := config.Parse(data, os.LookupEnv, protocols.Schemas())
	if err == nil {
		return factsOf(cfg)
	}
	var errs config.Errors
	if errors.As(err, &errs) {
		var left config.Errors
		for _, e := range errs {
			if !strings.Contains(e.Path, ".kubernetes_api") {
				left = append(left, e)
			}
		}
		if len(left) > 0 {
			return Facts{}, left
		}
		return facts(data)
	}
	return Facts{}, err
}

// factsOf takes Facts from a parsed configuration (environment variables
// expanded).
func factsOf(cfg *config.Config) (Facts, error) {
	var f Facts
	if cfg.Admin.Address != config.DefaultAdminAddress {
		f.Admin = cfg.Admin.Address
	}
	if cfg.Probes != nil && cfg.Probes.Address != "" {
		var err error
		if f.ProbePort, err = port(cfg.Probes.Address); err != nil {
			return Facts{}, err
		}
	}
	for _, cl := range cfg.Clusters {
		if cl.KubernetesAPI != nil || (cl.Discovery != nil && cl.Discovery.Kubernetes != nil && cl.Discovery.Kubernetes.Kubeconfig == "") {
			f.NeedsToken = true
		}
	}
	return f, nil
}

func port(addr string) (int, error) {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return 0, fmt.Errorf("inject: config: probes.address: %w", err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		return 0, fmt.Errorf("inject: config: probes.address: port %q", p)
	}
	return n, nil
}

// facts reads the few fields Facts needs from a configuration whose only
// problems are the kubernetes_api ones ReadConfig leaves to the pod
// (Parse returns no configuration then); environment variables are not
// expanded here.
func facts(data []byte) (Facts, error) {
	var c struct {
		Admin    struct{ Address string } `yaml:"admin"`
		Probes   struct{ Address string } `yaml:"probes"`
		Clusters []struct {
			KubernetesAPI *yaml.Node `yaml:"kubernetes_api"`
			Discovery     struct {
				Kubernetes *struct{ Kubeconfig string } `yaml:"kubernetes"`
			} `yaml:"discovery"`
		} `yaml:"clusters"`
	}
	if err := yaml.Unmarshal(data, &c); err != nil {
		return Facts{}, fmt.Errorf("inject: config: %w", err)
	}
	var f Facts
	if c.Admin.Address != config.DefaultAdminAddress {
		f.Admin = c.Admin.Address
	}
	if c.Probes.Address != "" {
		var err error
		if f.ProbePort, err = port(c.Probes.Address); err != nil {
			return Facts{}, err
		}
	}
	for _, cl := range c.Clusters {
		if cl.KubernetesAPI != nil || (cl.Discovery.Kubernetes != nil && cl.Discovery.Kubernetes.Kubeconfig == "") {
			f.NeedsToken = true
		}
	}
	return f, nil
}
