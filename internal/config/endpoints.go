package config

import (
	"fmt"

	"gopkg.in/yaml.v3"
)

// ParseEndpoints reads an endpoints file of file discovery: a YAML list of
// endpoints written as in a cluster's endpoints ("host:port[ weight=N]").
// name is the file's name, used in errors, which give its line:
// "partners.yaml:3: endpoint "x": want host:port". An empty list is valid
// (the cluster then has no endpoints); an empty file is not, because that is
// what a reader sees in the middle of a write that truncates first.
// ${VAR} is not expanded: the file is data, not configuration.
func ParseEndpoints(name string, data []byte) ([]Endpoint, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		e := syntaxError(err)
		return nil, fmt.Errorf("%s:%d: %s", name, e.Line, e.Msg)
	}
	if len(root.Content) == 0 {
		return nil, fmt.Errorf("%s: empty file; want a list of endpoints (write [] for none)", name)
	}
	list := root.Content[0]
	if list.Kind != yaml.SequenceNode {
		return nil, fmt.Errorf("%s:%d: want a list of endpoints like [\"10.0.0.1:443\", \"b.example:443 weight=2\"], got %s", name, list.Line, kindName(list))
	}
	eps := make([]Endpoint, 0, len(list.Content))
	seen := map[string]int{}
	for _, n := range list.Content {
		if n.Kind != yaml.ScalarNode {
			return nil, fmt.Errorf("%s:%d: want an endpoint string, got %s", name, n.Line, kindName(n))
		}
		var e Endpoint
		if err := e.decodeScalar(n.Value); err != nil {
			return nil, fmt.Errorf("%s:%d: %v", name, n.Line, err)
		}
		if first, dup := seen[e.Address]; dup {
			return nil, fmt.Errorf("%s:%d: endpoint %s is listed twice (first on line %d)", name, n.Line, e.Address, first)
		}
		seen[e.Address] = n.Line
		eps = append(eps, e)
	}
	return eps, nil
}
