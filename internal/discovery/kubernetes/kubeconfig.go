package kubernetes

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"
	"k8s.io/client-go/rest"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// A kubeconfig file, as far as a client of one API server reads it: its
// current context's cluster and user. This is what client-go's
// clientcmd.BuildConfigFromFlags makes of one explicit file, without
// clientcmd itself, which links kubectl's flag and merging machinery
// (pflag, the kubeconfig conversion scheme) for 120 KiB of attache's idle
// RSS (docs/kubernetes.md). Not read: auth-provider (gone from kubectl
// since 1.26; exec plugins replace it), impersonation, and the cluster
// extension an exec plugin may be given.
type kubeconfig struct {
	CurrentContext string        `yaml:"current-context"`
	Clusters       []kubeCluster `yaml:"clusters"`
	Users          []kubeUser    `yaml:"users"`
	Contexts       []kubeContext `yaml:"contexts"`
}

type kubeCluster struct {
	Name    string `yaml:"name"`
	Cluster struct {
		Server        string `yaml:"server"`
		TLSServerName string `yaml:"tls-server-name"`
		Insecure      bool   `yaml:"insecure-skip-tls-verify"`
		CAFile        string `yaml:"certificate-authority"`
		CAData        string `yaml:"certificate-authority-data"`
		ProxyURL      string `yaml:"proxy-url"`
		NoCompression bool   `yaml:"disable-compression"`
	} `yaml:"cluster"`
}

type kubeUser struct {
	Name string `yaml:"name"`
	User struct {
		CertFile     string         `yaml:"client-certificate"`
		CertData     string         `yaml:"client-certificate-data"`
		KeyFile      string         `yaml:"client-key"`
		KeyData      string         `yaml:"client-key-data"`
		Token        string         `yaml:"token"`
		TokenFile    string         `yaml:"tokenFile"`
		Username     string         `yaml:"username"`
		Password     string         `yaml:"password"`
		Exec         *kubeExec      `yaml:"exec"`
		AuthProvider map[string]any `yaml:"auth-provider"`
		As           string         `yaml:"as"`
	} `yaml:"user"`
}

type kubeContext struct {
	Name    string `yaml:"name"`
	Context struct {
		Cluster string `yaml:"cluster"`
		User    string `yaml:"user"`
	} `yaml:"context"`
}

type kubeExec struct {
	APIVersion string   `yaml:"apiVersion"`
	Command    string   `yaml:"command"`
	Args       []string `yaml:"args"`
	Env        []struct {
		Name  string `yaml:"name"`
		Value string `yaml:"value"`
	} `yaml:"env"`
	InstallHint        string `yaml:"installHint"`
	ProvideClusterInfo bool   `yaml:"provideClusterInfo"`
	InteractiveMode    string `yaml:"interactiveMode"`
}

// loadKubeconfig returns the REST configuration of path's current context.
// Relative file names in it are taken from path's directory, as kubectl
// does.
func loadKubeconfig(path string) (*rest.Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	cfg, err := parseKubeconfig(b, filepath.Dir(path))
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", path, err)
	}
	return cfg, nil
}

func parseKubeconfig(b []byte, dir string) (*rest.Config, error) {
	var kc kubeconfig
	if err := yaml.Unmarshal(b, &kc); err != nil {
		return nil, err
	}
	if kc.CurrentContext == "" {
		return nil, errors.New("no current-context")
	}
	ctx := slices.IndexFunc(kc.Contexts, func(c kubeContext) bool { return c.Name == kc.CurrentContext })
	if ctx < 0 {
		return nil, fmt.Errorf("current-context %q: no such context", kc.CurrentContext)
	}
	clusterName, userName := kc.Contexts[ctx].Context.Cluster, kc.Contexts[ctx].Context.User
	cl := slices.IndexFunc(kc.Clusters, func(c kubeCluster) bool { return c.Name == clusterName })
	if cl < 0 {
		return nil, fmt.Errorf("context %q: no cluster %q", kc.CurrentContext, clusterName)
	}
	c := kc.Clusters[cl].Cluster
	if c.Server == "" {
		return nil, fmt.Errorf("cluster %q: no server", clusterName)
	}
	abs := func(p string) string {
		if p != "" && !filepath.IsAbs(p) {
			return filepath.Join(dir, p)
		}
		return p
	}
	cfg := &rest.Config{Host: c.Server, DisableCompression: c.NoCompression}
	if u, err := url.ParseRequestURI(cfg.Host); err == nil && u.Opaque == "" && len(u.Path) > 1 {
		u.RawQuery, u.Fragment = "", ""
		cfg.Host = u.String()
	}
	if c.ProxyURL != "" {
		u, err := url.Parse(c.ProxyURL)
		if err != nil || u.Host == "" {
			return nil, fmt.Errorf("cluster %q: proxy-url %q is not a URL", clusterName, c.ProxyURL)
		}
		cfg.Proxy = http.ProxyURL(u)
	}
	if !rest.IsConfigTransportTLS(*cfg) {
		return cfg, nil // credentials go over TLS only, as with kubectl
	}
	var errs []error
	data := func(field, s string) []byte {
		if s == "" {
			return nil
		}
		d, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: not base64: %v", field, err))
		}
		return d
	}
	cfg.CAFile, cfg.CAData = abs(c.CAFile), data("certificate-authority-data", c.CAData)
	cfg.Insecure, cfg.ServerName = c.Insecure, c.TLSServerName
	if userName == "" {
		return cfg, errors.Join(errs...)
	}
	us := slices.IndexFunc(kc.Users, func(u kubeUser) bool { return u.Name == userName })
	if us < 0 {
		return nil, fmt.Errorf("context %q: no user %q", kc.CurrentContext, userName)
	}
	u := kc.Users[us].User
	switch {
	case u.AuthProvider != nil:
		return nil, fmt.Errorf("user %q: auth-provider is not supported (use an exec credential plugin)", userName)
	case u.As != "":
		return nil, fmt.Errorf("user %q: impersonation (as) is not supported", userName)
	}
	switch {
	case u.Token != "":
		cfg.BearerToken, cfg.BearerTokenFile = u.Token, abs(u.TokenFile)
	case u.TokenFile != "":
		t, err := os.ReadFile(abs(u.TokenFile))
		if err != nil {
			return nil, fmt.Errorf("user %q: %w", userName, err)
		}
		cfg.BearerToken, cfg.BearerTokenFile = string(t), abs(u.TokenFile)
	}
	if u.CertFile != "" || u.CertData != "" {
		cfg.CertFile, cfg.CertData = abs(u.CertFile), data("client-certificate-data", u.CertData)
		cfg.KeyFile, cfg.KeyData = abs(u.KeyFile), data("client-key-data", u.KeyData)
	}
	cfg.Username, cfg.Password = u.Username, u.Password
	if e := u.Exec; e != nil {
		if e.Command == "" {
			return nil, fmt.Errorf("user %q: exec: no command", userName)
		}
		x := &clientcmdapi.ExecConfig{APIVersion: e.APIVersion, Command: e.Command, Args: e.Args,
			InstallHint: e.InstallHint, ProvideClusterInfo: e.ProvideClusterInfo,
			InteractiveMode: clientcmdapi.ExecInteractiveMode(e.InteractiveMode)}
		if strings.ContainsRune(x.Command, filepath.Separator) {
			x.Command = abs(x.Command)
		}
		for _, v := range e.Env {
			x.Env = append(x.Env, clientcmdapi.ExecEnvVar{Name: v.Name, Value: v.Value})
		}
		if x.InteractiveMode == "" {
			switch x.APIVersion {
			case "client.authentication.k8s.io/v1beta1", "client.authentication.k8s.io/v1alpha1":
				x.InteractiveMode = clientcmdapi.IfAvailableExecInteractiveMode
			default:
				return nil, fmt.Errorf("user %q: exec: interactiveMode must be set for %q", userName, x.APIVersion)
			}
		}
		cfg.ExecProvider = x
	}
	return cfg, errors.Join(errs...)
}
