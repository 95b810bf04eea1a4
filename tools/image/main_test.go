package main

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

const (
	testVersion = "v9.8.7-test"
	testCommit  = "feedfacecafe"
	testName    = "attache:" + testVersion
)

// buildAttache cross-compiles the real attache for linux/arch, stamped with
// the test version and commit, as make image does.
func buildAttache(t *testing.T, arch string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "attache-linux-"+arch)
	pkg := "github.com/attache-proxy/attache/internal/cli"
	cmd := exec.Command("go", "build", "-trimpath",
		"-ldflags", "-s -w -X "+pkg+".Version="+testVersion+" -X "+pkg+".Commit="+testCommit,
		"-o", out, "./cmd/attache")
	cmd.Dir = "../.."
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build attache: %v\n%s", err, b)
	}
	return out
}

// caRoots is the build machine's CA bundle; CI installs ca-certificates.
func caRoots(t *testing.T) string {
	t.Helper()
	const ca = "/etc/ssl/certs/ca-certificates.crt"
	if _, err := os.Stat(ca); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s: %v (install Debian's ca-certificates)", ca, err)
		}
		t.Skipf("%s: %v (install Debian's ca-certificates)", ca, err)
	}
	return ca
}

// TestImage builds the image for the host's architecture into a temporary
// tarball, reads it back the way an OCI loader (index.json) and a docker
// loader (manifest.json) do, and runs the entrypoint from the unpacked layer.
func TestImage(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("runs the linux binary it packs")
	}
	opts := Options{
		Name: testName, Version: testVersion, Revision: testCommit,
		Created:   time.Unix(1700000000, 0).UTC(),
		CARoots:   caRoots(t),
		Platforms: []Platform{{Arch: runtime.GOARCH, Binary: buildAttache(t, runtime.GOARCH)}},
	}
	idx, err := Build(opts)
	if err != nil {
		t.Fatal(err)
	}
	tarPath := filepath.Join(t.TempDir(), "attache-image.tar")
	if err := WriteTarball(tarPath, opts.Name, idx); err != nil {
		t.Fatal(err)
	}

	dir := untar(t, tarPath)
	for _, f := range []string{"oci-layout", "index.json", "manifest.json"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("archive lacks %s: %v", f, err)
		}
	}
	img := ociImage(t, dir)

	t.Run("docker manifest.json names the same image", func(t *testing.T) {
		tag, err := name.NewTag(testName)
		if err != nil {
			t.Fatal(err)
		}
		dimg, err := tarball.ImageFromPath(tarPath, &tag)
		if err != nil {
			t.Fatalf("docker-archive read: %v", err)
		}
		want, _ := img.ConfigName()
		if got, _ := dimg.ConfigName(); got != want {
			t.Errorf("manifest.json config: got %v, want %v", got, want)
		}
	})

	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	t.Run("config", func(t *testing.T) {
		c := cf.Config
		if u := strings.SplitN(c.User, ":", 2)[0]; u == "" || u == "0" || u == "root" {
			t.Errorf("user: got %q, want a non-root user", c.User)
		}
		if c.User != "65532:65532" {
			t.Errorf("user: got %q, want 65532:65532", c.User)
		}
		if !slices.Equal(c.Entrypoint, []string{"/attache"}) || len(c.Cmd) != 0 {
			t.Errorf("entrypoint, cmd: got %q %q, want [/attache] []", c.Entrypoint, c.Cmd)
		}
		if c.StopSignal != "SIGTERM" {
			t.Errorf("stop signal: got %q, want SIGTERM", c.StopSignal)
		}
		if len(c.Env) != 0 {
			t.Errorf("env: got %q, want none", c.Env)
		}
		if cf.OS != "linux" || cf.Architecture != runtime.GOARCH {
			t.Errorf("platform: got %s/%s, want linux/%s", cf.OS, cf.Architecture, runtime.GOARCH)
		}
		if !cf.Created.Time.Equal(opts.Created) {
			t.Errorf("created: got %v, want %v", cf.Created.Time, opts.Created)
		}
		for k, want := range map[string]string{
			"org.opencontainers.image.source":   sourceURL,
			"org.opencontainers.image.version":  testVersion,
			"org.opencontainers.image.revision": testCommit,
		} {
			if got := c.Labels[k]; got != want {
				t.Errorf("label %s: got %q, want %q", k, got, want)
			}
		}
	})

	root := t.TempDir()
	files := unpackLayer(t, img, root)
	t.Run("layer holds the binary, CA roots, passwd and group only", func(t *testing.T) {
		want := []string{"attache", "etc/", "etc/group", "etc/passwd", "etc/ssl/", "etc/ssl/certs/", caPath}
		if !slices.Equal(files, want) {
			t.Errorf("files: got %q, want %q", files, want)
		}
		passwd, _ := os.ReadFile(filepath.Join(root, "etc/passwd"))
		if !strings.Contains(string(passwd), ":65532:65532:") {
			t.Errorf("passwd: got %q, want an entry for 65532:65532", passwd)
		}
		group, _ := os.ReadFile(filepath.Join(root, "etc/group"))
		if !strings.Contains(string(group), ":65532:") {
			t.Errorf("group: got %q, want an entry for 65532", group)
		}
		ca, _ := os.ReadFile(filepath.Join(root, caPath))
		if want, _ := os.ReadFile(opts.CARoots); !bytes.Equal(ca, want) || len(ca) == 0 {
			t.Errorf("CA roots: got %d bytes, want the %d of %s", len(ca), len(want), opts.CARoots)
		}
	})

	t.Run("entrypoint runs attache version", func(t *testing.T) {
		entry := filepath.Join(root, cf.Config.Entrypoint[0])
		out, err := exec.Command(entry, "version").CombinedOutput()
		if err != nil {
			t.Fatalf("%s version: %v\n%s", entry, err, out)
		}
		want := "attache " + testVersion + " (commit " + testCommit + ", go"
		if !strings.HasPrefix(string(out), want) {
			t.Errorf("version: got %q, want prefix %q", out, want)
		}
	})

	t.Run("reproducible", func(t *testing.T) {
		again, err := Build(opts)
		if err != nil {
			t.Fatal(err)
		}
		d1, _ := idx.Digest()
		d2, _ := again.Digest()
		if d1 != d2 {
			t.Errorf("index digest: got %v on the second build, want %v", d2, d1)
		}
	})
}

// ociImage reads the layout the way containerd and podman do: index.json
// holds one entry, named, pointing at the index of platform images.
func ociImage(t *testing.T, dir string) v1.Image {
	t.Helper()
	top, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatalf("OCI layout: %v", err)
	}
	tm, err := top.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(tm.Manifests) != 1 {
		t.Fatalf("index.json: got %d entries, want 1", len(tm.Manifests))
	}
	d := tm.Manifests[0]
	if got, want := d.Annotations["io.containerd.image.name"], "docker.io/library/"+testName; got != want {
		t.Errorf("io.containerd.image.name: got %q, want %q", got, want)
	}
	if got := d.Annotations["org.opencontainers.image.ref.name"]; got != testVersion {
		t.Errorf("org.opencontainers.image.ref.name: got %q, want %q", got, testVersion)
	}
	idx, err := top.ImageIndex(d.Digest)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 1 || im.Manifests[0].Platform == nil ||
		im.Manifests[0].Platform.OS != "linux" || im.Manifests[0].Platform.Architecture != runtime.GOARCH {
		t.Fatalf("platform index: got %+v, want one linux/%s image", im.Manifests, runtime.GOARCH)
	}
	if at := im.Manifests[0].ArtifactType; at != "" {
		t.Errorf("image descriptor: got artifactType %q, want none (an image, not an artifact)", at)
	}
	img, err := idx.Image(im.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// unpackLayer extracts the image's only layer under root and returns the
// names of its entries in order.
func unpackLayer(t *testing.T, img v1.Image, root string) []string {
	t.Helper()
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers: got %d (%v), want 1", len(layers), err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	return extract(t, rc, root)
}

func untar(t *testing.T, file string) string {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dir := t.TempDir()
	extract(t, f, dir)
	return dir
}

// extract unpacks regular files and directories of a tar stream under dir.
func extract(t *testing.T, r io.Reader, dir string) []string {
	t.Helper()
	var names []string
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return names
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
		p := filepath.Join(dir, filepath.FromSlash(h.Name))
		if !strings.HasPrefix(p, dir+string(filepath.Separator)) {
			t.Fatalf("entry %q escapes the root", h.Name)
		}
		switch h.Typeflag {
		case tar.TypeDir:
			err = os.MkdirAll(p, 0o755)
		case tar.TypeReg:
			err = writeFile(p, tr, h.FileInfo().Mode().Perm())
		default:
			t.Fatalf("entry %q: type %q, want a file or directory", h.Name, h.Typeflag)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

func writeFile(p string, r io.Reader, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// TestCheckBinary: a binary is packed only under its own architecture and
// only when static.
func TestCheckBinary(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	f, err := elf.Open(self)
	if err != nil {
		t.Skipf("test binary is not ELF: %v", err)
	}
	f.Close()
	other := "arm64"
	if runtime.GOARCH == "arm64" {
		other = "amd64"
	}
	tests := []struct {
		name, file, arch, wantErr string
	}{
		{"wrong architecture", self, other, "not linux/" + other},
		{"unknown architecture", self, "mips", "unsupported architecture"},
		{"not an ELF file", "main.go", runtime.GOARCH, "bad magic"},
	}
	if dynamic("/bin/true") {
		tests = append(tests, struct{ name, file, arch, wantErr string }{"dynamically linked", "/bin/true", runtime.GOARCH, "dynamically linked"})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkBinary(tt.file, tt.arch)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("got %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}

func dynamic(file string) bool {
	f, err := elf.Open(file)
	if err != nil {
		return false
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return true
		}
	}
	return false
}

func TestNormalize(t *testing.T) {
	tests := []struct{ in, want string }{
		{"attache:v1", "docker.io/library/attache:v1"},
		{"team/attache:v1", "docker.io/team/attache:v1"},
		{"ghcr.io/attache-proxy/attache:v1.2.3-4-gabc", "ghcr.io/attache-proxy/attache:v1.2.3-4-gabc"},
		{"localhost:5000/attache:dev", "localhost:5000/attache:dev"},
		{"localhost/attache:dev", "localhost/attache:dev"},
	}
	for _, tt := range tests {
		if got, err := normalize(tt.in); err != nil || got != tt.want {
			t.Errorf("normalize(%q): got %q, %v, want %q", tt.in, got, err, tt.want)
		}
	}
	for _, bad := range []string{"attache", "localhost:5000/attache", "attache:", ":v1"} {
		if got, err := normalize(bad); err == nil {
			t.Errorf("normalize(%q): got %q, want an error", bad, got)
		}
	}
}

// TestDockerManifestOrder: Docker's classic store tags the last entry of
// manifest.json, so amd64 comes last.
func TestDockerManifestOrder(t *testing.T) {
	descs := []v1.Descriptor{
		{Platform: &v1.Platform{Architecture: "amd64"}},
		{Platform: &v1.Platform{Architecture: "arm64"}},
		{Platform: &v1.Platform{Architecture: "riscv64"}},
	}
	sortForDocker(descs)
	var got []string
	for _, d := range descs {
		got = append(got, d.Platform.Architecture)
	}
	if want := []string{"arm64", "riscv64", "amd64"}; !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

// TestDockerfile: the Dockerfile builds the image make image assembles, so
// its final stage must agree on user, entrypoint, binary path and stop
// signal, and its binary must be static and trimmed.
func TestDockerfile(t *testing.T) {
	b, err := os.ReadFile("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	final := text[strings.LastIndex(text, "\nFROM "):]
	for _, want := range []string{
		"\nFROM gcr.io/distroless/static-debian12:nonroot\n",
		"\nCOPY --from=build /out/attache /" + binaryPath + "\n",
		"\nUSER 65532:65532\n",
		"\nSTOPSIGNAL SIGTERM\n",
		"\nENTRYPOINT [\"/" + binaryPath + "\"]\n",
		"org.opencontainers.image.source=\"" + sourceURL + "\"",
	} {
		if !strings.Contains(final, want) {
			t.Errorf("final stage: got no %q", strings.TrimSpace(want))
		}
	}
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "cli.Version=${VERSION}", "cli.Commit=${COMMIT}"} {
		if !strings.Contains(text, want) {
			t.Errorf("build stage: got no %q", want)
		}
	}
}
