// Command image assembles attache's container image without a container
// engine: one layer per platform holding the static binary, the CA roots and
// the passwd/group entries of the nonroot user, in an OCI image layout
// tarball that also carries a docker-archive manifest.json, so that
// `docker load`, `podman load` and `ctr images import` all accept it.
//
//	go run . -o ../../bin/attache-image.tar -name attache:v1.2.3 -version v1.2.3 \
//	    -bin linux/amd64=../../bin/attache-linux-amd64 -bin linux/arm64=...
package main

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// The image's fixed layout.
const (
	binaryPath = "attache"                           // the entrypoint, /attache
	caPath     = "etc/ssl/certs/ca-certificates.crt" // a path Go's crypto/x509 reads on Linux
	nonroot    = 65532                               // distroless's nonroot uid and gid
	passwd     = "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/nonexistent:/sbin/nologin\n"
	group      = "root:x:0:\nnonroot:x:65532:\n"
	sourceURL  = "https://github.com/attache-proxy/attache"
)

// Platform is one image of the index: a linux architecture and the static
// binary built for it.
type Platform struct {
	Arch   string // GOARCH: amd64, arm64
	Binary string // path of the static attache binary for Arch
}

// Options describe the image to assemble.
type Options struct {
	Name      string     // image reference the loaders tag it with, e.g. attache:v1.2.3
	Version   string     // org.opencontainers.image.version
	Revision  string     // org.opencontainers.image.revision (the commit), optional
	License   string     // org.opencontainers.image.licenses (SPDX), omitted when empty
	Created   time.Time  // the configs' creation time and the files' mtime
	CARoots   string     // PEM bundle copied to /etc/ssl/certs/ca-certificates.crt
	Platforms []Platform // one image per platform, in this order
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("image", flag.ContinueOnError)
	out := fs.String("o", "bin/attache-image.tar", "output `file`")
	var o Options
	fs.StringVar(&o.Name, "name", "attache:dev", "image `reference`")
	fs.StringVar(&o.Version, "version", "dev", "image version label")
	fs.StringVar(&o.Revision, "revision", "", "commit label")
	fs.StringVar(&o.License, "license", "", "SPDX license label (omitted when empty)")
	fs.StringVar(&o.CARoots, "ca", "/etc/ssl/certs/ca-certificates.crt", "CA roots `file` (PEM)")
	epoch := fs.String("created", os.Getenv("SOURCE_DATE_EPOCH"), "creation time, Unix `seconds` (default SOURCE_DATE_EPOCH, else 0)")
	fs.Func("bin", "`linux/ARCH=PATH` of a static binary (repeat per platform)", func(s string) error {
		p, err := parsePlatform(s)
		o.Platforms = append(o.Platforms, p)
		return err
	})
	if err := fs.Parse(args); err != nil {
		return err
	}
	sec := int64(0)
	if *epoch != "" {
		var err error
		if sec, err = strconv.ParseInt(*epoch, 10, 64); err != nil {
			return fmt.Errorf("created %q: %w", *epoch, err)
		}
	}
	o.Created = time.Unix(sec, 0).UTC()
	idx, err := Build(o)
	if err != nil {
		return err
	}
	return WriteTarball(*out, o.Name, idx)
}

// parsePlatform parses linux/ARCH=PATH.
func parsePlatform(s string) (Platform, error) {
	plat, bin, ok := strings.Cut(s, "=")
	arch, found := strings.CutPrefix(plat, "linux/")
	if !ok || !found || arch == "" || bin == "" {
		return Platform{}, fmt.Errorf("bin %q: want linux/ARCH=PATH", s)
	}
	return Platform{Arch: arch, Binary: bin}, nil
}

// elfMachine maps a GOARCH to the ELF machine its binaries carry.
var elfMachine = map[string]elf.Machine{
	"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64, "arm": elf.EM_ARM,
	"386": elf.EM_386, "ppc64le": elf.EM_PPC64, "s390x": elf.EM_S390, "riscv64": elf.EM_RISCV,
}

// checkBinary refuses a file that is not a static Linux ELF executable for
// arch, so that an image can never label one architecture's binary as
// another's, nor ship a binary that needs a dynamic loader the image lacks.
func checkBinary(file, arch string) error {
	want, ok := elfMachine[arch]
	if !ok {
		return fmt.Errorf("%s: unsupported architecture %q", file, arch)
	}
	f, err := elf.Open(file)
	if err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	defer f.Close()
	if f.Machine != want {
		return fmt.Errorf("%s: built for %v, not linux/%s", file, f.Machine, arch)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%s: dynamically linked (build with CGO_ENABLED=0)", file)
		}
	}
	return nil
}

// Build assembles the multi-platform index: per platform, one layer and a
// config that runs the binary as nonroot.
func Build(o Options) (v1.ImageIndex, error) {
	if len(o.Platforms) == 0 {
		return nil, errors.New("no platform: give -bin linux/ARCH=PATH")
	}
	ca, err := os.ReadFile(o.CARoots)
	if err != nil {
		return nil, fmt.Errorf("ca roots: %w", err)
	}
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, p := range o.Platforms {
		img, err := buildImage(o, p, ca)
		if err != nil {
			return nil, err
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
			Add:        plainImage{img},
			Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: p.Arch}},
		})
	}
	return idx, nil
}

// plainImage describes itself in the index as buildkit and docker save do:
// go-containerregistry would add an artifactType (the config's media type),
// which is meant for artifacts and referrers, not for a runnable image.
type plainImage struct{ v1.Image }

func (p plainImage) Descriptor() (*v1.Descriptor, error) {
	var d v1.Descriptor
	var err error
	if d.MediaType, err = p.MediaType(); err != nil {
		return nil, err
	}
	if d.Size, err = p.Size(); err != nil {
		return nil, err
	}
	if d.Digest, err = p.Digest(); err != nil {
		return nil, err
	}
	return &d, nil
}

func buildImage(o Options, p Platform, ca []byte) (v1.Image, error) {
	if err := checkBinary(p.Binary, p.Arch); err != nil {
		return nil, err
	}
	bin, err := os.ReadFile(p.Binary)
	if err != nil {
		return nil, err
	}
	files, err := layerTar(bin, ca, o.Created)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(files)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, err
	}
	base := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	base = mutate.ConfigMediaType(base, types.OCIConfigJSON)
	base, err = mutate.ConfigFile(base, configFile(o, p.Arch))
	if err != nil {
		return nil, err
	}
	return mutate.Append(base, mutate.Addendum{
		Layer: layer,
		History: v1.History{
			Created:   v1.Time{Time: o.Created},
			CreatedBy: "make image: attache " + o.Version + ", CA roots, nonroot user",
		},
	})
}

// configFile is the runtime config: nonroot, the binary as entrypoint, no
// shell and no environment (the CA roots are at a path Go reads by default).
func configFile(o Options, arch string) *v1.ConfigFile {
	labels := map[string]string{
		"org.opencontainers.image.source":  sourceURL,
		"org.opencontainers.image.version": o.Version,
		"org.opencontainers.image.title":   "attache",
	}
	if o.Revision != "" {
		labels["org.opencontainers.image.revision"] = o.Revision
	}
	if o.License != "" {
		labels["org.opencontainers.image.licenses"] = o.License
	}
	return &v1.ConfigFile{
		Architecture: arch,
		OS:           "linux",
		Created:      v1.Time{Time: o.Created},
		RootFS:       v1.RootFS{Type: "layers"},
		Config: v1.Config{
			User:       fmt.Sprintf("%d:%d", nonroot, nonroot),
			Entrypoint: []string{"/" + binaryPath},
			WorkingDir: "/",
			StopSignal: "SIGTERM",
			Labels:     labels,
		},
	}
}

// layerTar is the single layer: the directories on the way, passwd and
// group, the CA roots and the binary, owned by root, in a fixed order with
// a fixed mtime so that the same inputs give the same digest.
func layerTar(bin, ca []byte, mtime time.Time) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	entries := []struct {
		name string
		mode int64
		data []byte
	}{
		{binaryPath, 0o755, bin},
		{"etc/", 0o755, nil},
		{"etc/group", 0o644, []byte(group)},
		{"etc/passwd", 0o644, []byte(passwd)},
		{"etc/ssl/", 0o755, nil},
		{"etc/ssl/certs/", 0o755, nil},
		{caPath, 0o644, ca},
	}
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Mode: e.mode, ModTime: mtime, Typeflag: tar.TypeReg, Size: int64(len(e.data)), Format: tar.FormatPAX}
		if strings.HasSuffix(e.name, "/") {
			h.Typeflag = tar.TypeDir
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// WriteTarball writes idx as an OCI image layout (oci-layout, index.json
// with one entry naming the index, blobs/sha256/...) plus a docker-archive
// manifest.json over the same blobs, one entry per platform, all tagged
// name, amd64 last: containerd, and Docker on its containerd store, read the
// layout and pick the host's platform; Docker's classic store reads
// manifest.json and tags the last entry loaded (--platform selects one).
func WriteTarball(out, name string, idx v1.ImageIndex) error {
	dir, err := os.MkdirTemp("", "attache-image-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	lp, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	ref, err := normalize(name)
	if err != nil {
		return err
	}
	_, tag, _ := strings.Cut(ref[strings.LastIndex(ref, "/")+1:], ":")
	if err := lp.AppendIndex(idx, layout.WithAnnotations(map[string]string{
		"io.containerd.image.name":          ref,
		"org.opencontainers.image.ref.name": tag,
	})); err != nil {
		return err
	}
	mf, err := dockerManifest(idx, name)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "manifest.json"), mf, 0o644); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	tmp := out + ".tmp"
	if err := tarDir(dir, tmp); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, out)
}

// normalize turns a familiar reference (attache:v1) into the full one
// containerd names images by (docker.io/library/attache:v1).
func normalize(name string) (string, error) {
	i := strings.LastIndex(name, ":")
	if i <= strings.LastIndex(name, "/") || i == 0 || i == len(name)-1 {
		return "", fmt.Errorf("name %q: want REPOSITORY:TAG", name)
	}
	repo, tag := name[:i], name[i+1:]
	first, _, hasSlash := strings.Cut(repo, "/")
	switch {
	case !hasSlash:
		repo = "docker.io/library/" + repo
	case !strings.ContainsAny(first, ".:") && first != "localhost":
		repo = "docker.io/" + repo
	}
	return repo + ":" + tag, nil
}

// manifestItem is one entry of docker-archive's manifest.json.
type manifestItem struct {
	Config   string
	RepoTags []string
	Layers   []string
}

func dockerManifest(idx v1.ImageIndex, name string) ([]byte, error) {
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	descs := append([]v1.Descriptor(nil), im.Manifests...)
	sortForDocker(descs)
	var items []manifestItem
	for _, d := range descs {
		img, err := idx.Image(d.Digest)
		if err != nil {
			return nil, err
		}
		m, err := img.Manifest()
		if err != nil {
			return nil, err
		}
		it := manifestItem{Config: blobPath(m.Config.Digest), RepoTags: []string{name}}
		for _, l := range m.Layers {
			it.Layers = append(it.Layers, blobPath(l.Digest))
		}
		items = append(items, it)
	}
	return json.Marshal(items)
}

// sortForDocker moves amd64 last: Docker's classic store, loading every
// entry, keeps the tag on the last, and amd64 hosts are the common case.
func sortForDocker(descs []v1.Descriptor) {
	sort.SliceStable(descs, func(i, j int) bool {
		return descs[i].Platform.Architecture != "amd64" && descs[j].Platform.Architecture == "amd64"
	})
}

func blobPath(h v1.Hash) string { return path.Join("blobs", h.Algorithm, h.Hex) }

// tarDir writes the tree under dir to the tar file out, sorted, with zero
// mtimes and root ownership, so the archive depends on the content only.
func tarDir(dir, out string) error {
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		h := &tar.Header{Name: filepath.ToSlash(rel), Mode: 0o644, ModTime: time.Unix(0, 0), Typeflag: tar.TypeReg}
		if d.IsDir() {
			h.Name += "/"
			h.Mode, h.Typeflag = 0o755, tar.TypeDir
			return tw.WriteHeader(h)
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		h.Size = int64(len(data))
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		_, err = tw.Write(data)
		return err
	})
	if err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return f.Close()
}
