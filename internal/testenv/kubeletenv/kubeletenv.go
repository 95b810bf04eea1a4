// Package kubeletenv starts a real Kubernetes node for end-to-end tests:
// containerd (runc, overlayfs) with its own root, state and socket under a
// temporary directory, and a kubelet registered with a kubeenv API server.
//
// There is no scheduler, CNI plugin or image registry: pods name the node
// in spec.nodeName, use hostNetwork (the kubelet runs only those while the
// runtime's network is not ready), and use images imported with Import.
// The sandbox ("pause") image is built from ./pause when the node starts.
//
// Everything runs as root on the test machine: containers share its
// network, so the pods' ports are the machine's ports, and the kubelet sets
// a few kernel settings (vm.overcommit_memory, kernel.panic_on_oops, ...),
// which are put back when the node stops. The node is stopped
// when the test ends: its pods are deleted, the kubelet stopped, every
// container killed and removed through containerd, containerd stopped, the
// shims containerd left killed by PID, and the mounts, cgroups and directory
// removed. A test binary killed outright may leave shims and cgroups.
//
// Without root, kubelet (tools/build.sh kubelet), containerd or runc a test
// is skipped, and fails under CI=true.
package kubeletenv

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/attache-proxy/attache/internal/testenv"
	"github.com/attache-proxy/attache/internal/testenv/kubeenv"
)

// PauseImage is the sandbox image every node is given.
const PauseImage = "docker.io/library/kubeletenv-pause:1"

// Node is a running kubelet and its containerd.
type Node struct {
	Name string // the Node object's name: pods bind to it with spec.nodeName
	// IP is the node's address: a non-loopback address of this machine (the
	// kubelet refuses a loopback one). It is the IP of every hostNetwork
	// pod, so the kubelet's httpGet probes go there.
	IP string

	kube       *kubeenv.Kube
	dir        string
	sock       string // containerd's socket
	ctr        string // the ctr binary
	cgroupRoot string // the kubelet's cgroup root, under every v1 hierarchy
	sysctls    map[string][]byte
	logLinks   bool // /var/log/containers did not exist before the kubelet
}

// kubeletSysctls are the kernel settings the kubelet sets at start
// (setupKernelTunables: overcommit, panic on oops, ...); the node puts
// back the values they had when it stops.
var kubeletSysctls = []string{
	"vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
	"kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes",
}

// Start starts containerd and a kubelet registered with kube, and waits
// until the Node object exists. The node is stopped when t ends.
func Start(t testing.TB, kube *kubeenv.Kube) *Node {
	t.Helper()
	if os.Geteuid() != 0 {
		testenv.Unavailable(t, "kubeletenv: a kubelet and containerd need root")
	}
	kubelet := testenv.Tool(t, "kubelet")
	containerd := testenv.Binary(t, "containerd", "containerd")
	testenv.Binary(t, "containerd-shim-runc-v2", "containerd")
	testenv.Binary(t, "runc", "runc")
	n := &Node{kube: kube, ctr: testenv.Binary(t, "ctr", "containerd")}
	var err error
	if n.IP, err = nodeIP(); err != nil {
		testenv.Unavailable(t, "kubeletenv: %v", err)
	}
	if n.dir, err = os.MkdirTemp("", "attache-kubelet-"); err != nil {
		t.Fatal(err)
	}
	suffix := randomHex(4)
	n.Name = "kubeletenv-" + suffix
	n.cgroupRoot = "/attache-kubeletenv-" + suffix
	n.sock = filepath.Join(n.dir, "containerd.sock")
	var stopKubelet, stopContainerd func()
	t.Cleanup(func() { n.stop(t, stopKubelet, stopContainerd) })

	pauseBin := filepath.Join(n.dir, "pause")
	build := exec.Command(goTool(), "build", "-trimpath", "-o", pauseBin, "github.com/attache-proxy/attache/internal/testenv/kubeletenv/pause")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("kubeletenv: build pause: %v\n%s", err, out)
	}
	pauseTar := filepath.Join(n.dir, "pause.tar")
	if err := WriteImage(pauseTar, Image{Ref: PauseImage, Files: map[string]string{"pause": pauseBin}, Entrypoint: []string{"/pause"}}); err != nil {
		t.Fatal(err)
	}

	if err := n.writeContainerdConfig(); err != nil {
		t.Fatal(err)
	}
	stopContainerd = n.run(t, containerd, "containerd.log", "--config", filepath.Join(n.dir, "containerd.toml"))
	if err := n.waitContainerd(30 * time.Second); err != nil {
		t.Fatalf("kubeletenv: %v\n%s", err, n.Logs())
	}
	n.Import(t, pauseTar)

	if err := n.makeCgroupRoot(); err != nil {
		t.Fatalf("kubeletenv: %v", err)
	}
	if err := n.writeKubeletConfig(); err != nil {
		t.Fatal(err)
	}
	_, err = os.Stat(containerLogLinks)
	n.logLinks = os.IsNotExist(err)
	n.sysctls = map[string][]byte{}
	for _, k := range kubeletSysctls {
		if b, err := os.ReadFile("/proc/sys/" + k); err == nil {
			n.sysctls[k] = b
		}
	}
	stopKubelet = n.run(t, kubelet, "kubelet.log",
		"--config="+filepath.Join(n.dir, "kubelet.yaml"),
		"--kubeconfig="+kube.Kubeconfig(t, n.dir, ""),
		"--hostname-override="+n.Name,
		"--node-ip="+n.IP,
		"--root-dir="+filepath.Join(n.dir, "kubelet"),
		"--cert-dir="+filepath.Join(n.dir, "kubelet-pki"),
		"--v=2")
	if err := n.waitNode(90 * time.Second); err != nil {
		t.Fatalf("kubeletenv: %v\n%s", err, n.Logs())
	}
	return n
}

// Import imports an image tarball (OCI layout or docker archive) into the
// namespace the kubelet's containerd uses.
func (n *Node) Import(t testing.TB, tarball string) {
	t.Helper()
	if out, err := n.ctrCmd("images", "import", tarball).CombinedOutput(); err != nil {
		t.Fatalf("kubeletenv: import %s: %v\n%s", tarball, err, out)
	}
}

// Logs returns the tails of the kubelet's and containerd's logs, for
// failure messages.
func (n *Node) Logs() string {
	return "--- kubelet.log (tail) ---\n" + tail(filepath.Join(n.dir, "kubelet.log"), 60) +
		"\n--- containerd.log (tail) ---\n" + tail(filepath.Join(n.dir, "containerd.log"), 30)
}

// ContainerLog returns the log the kubelet kept of a container of a pod
// (its current or last run), or the error reading it.
func (n *Node) ContainerLog(namespace, pod, container string) string {
	dirs, _ := filepath.Glob(filepath.Join(n.dir, "pod-logs", namespace+"_"+pod+"_*", container))
	if len(dirs) == 0 {
		return "(no log)"
	}
	files, _ := filepath.Glob(filepath.Join(dirs[0], "*.log"))
	sort.Strings(files)
	var b strings.Builder
	for _, f := range files {
		fmt.Fprintf(&b, "%s:\n%s\n", filepath.Base(f), tail(f, 40))
	}
	return b.String()
}

// writeContainerdConfig writes containerd's configuration: its own root,
// state and socket, runc with the cgroupfs driver, overlayfs, our pause
// image, and restrict_oom_score_adj, without which every sandbox fails
// where root lacks CAP_SYS_RESOURCE (as in some VMs and containers):
// containerd gives the pause process oom_score_adj -998, and runc's
// attempt to lower it fails ("runc create failed: unable to start
// container process: can't get final child's PID from pipe: EOF").
func (n *Node) writeContainerdConfig() error {
	q := strconv.Quote
	cfg := `version = 2
root = ` + q(filepath.Join(n.dir, "containerd-root")) + `
state = ` + q(filepath.Join(n.dir, "containerd-state")) + `
[grpc]
  address = ` + q(n.sock) + `
[ttrpc]
  address = ` + q(n.sock+".ttrpc") + `
[plugins."io.containerd.internal.v1.opt"]
  path = ` + q(filepath.Join(n.dir, "containerd-opt")) + `
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = ` + q(PauseImage) + `
  stream_server_address = "127.0.0.1"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = ` + q(filepath.Join(n.dir, "cni-bin")) + `
    conf_dir = ` + q(filepath.Join(n.dir, "cni-conf")) + `
`
	return os.WriteFile(filepath.Join(n.dir, "containerd.toml"), []byte(cfg), 0o600)
}

// writeKubeletConfig writes a KubeletConfiguration for a node without
// systemd, swap accounting or a network plugin: the cgroupfs driver under a
// cgroup root of its own, cgroup v1 allowed, no server ports, eviction and
// image garbage collection that never act on the test machine, and the
// pods' logs under the node's directory.
func (n *Node) writeKubeletConfig() error {
	q := strconv.Quote
	cfg := `apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
containerRuntimeEndpoint: ` + q("unix://"+n.sock) + `
cgroupDriver: cgroupfs
cgroupRoot: ` + q(n.cgroupRoot) + `
failCgroupV1: false
failSwapOn: false
enableServer: false
readOnlyPort: 0
healthzPort: 0
authentication: {anonymous: {enabled: false}, webhook: {enabled: false}}
authorization: {mode: AlwaysAllow}
podLogsDir: ` + q(filepath.Join(n.dir, "pod-logs")) + `
localStorageCapacityIsolation: false
evictionHard: {memory.available: "1Mi", nodefs.available: "1%", nodefs.inodesFree: "1%", imagefs.available: "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
syncFrequency: 5s
fileCheckFrequency: 5s
nodeStatusUpdateFrequency: 5s
`
	return os.WriteFile(filepath.Join(n.dir, "kubelet.yaml"), []byte(cfg), 0o600)
}

// cgroupHierarchies lists the mounted cgroup hierarchies' directories.
func cgroupHierarchies() []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var dirs []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS ... - FSTYPE SOURCE SUPER
		fields := strings.Fields(sc.Text())
		for i, fld := range fields {
			if fld == "-" && i+1 < len(fields) && (fields[i+1] == "cgroup" || fields[i+1] == "cgroup2") {
				dirs = append(dirs, unescape(fields[4]))
			}
		}
	}
	return dirs
}

// makeCgroupRoot creates the kubelet's cgroup root in every hierarchy (the
// kubelet requires it to exist), with the cpuset of the root cgroup.
func (n *Node) makeCgroupRoot() error {
	for _, h := range cgroupHierarchies() {
		d := filepath.Join(h, n.cgroupRoot)
		if err := os.Mkdir(d, 0o755); err != nil && !os.IsExist(err) {
			return fmt.Errorf("cgroup root: %w", err)
		}
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			if b, err := os.ReadFile(filepath.Join(h, f)); err == nil {
				if err := os.WriteFile(filepath.Join(d, f), b, 0o644); err != nil {
					return fmt.Errorf("cgroup root: %w", err)
				}
			}
		}
	}
	return nil
}

// run starts a daemon with its output in the node's directory. The stop it
// returns sends SIGTERM, then SIGKILL after 5s.
func (n *Node) run(t testing.TB, bin, log string, args ...string) (stop func()) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir = n.dir
	f, err := os.Create(filepath.Join(n.dir, log))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd.Stdout, cmd.Stderr = f, f
	return testenv.Start(t, cmd)
}

func (n *Node) ctrCmd(args ...string) *exec.Cmd {
	return exec.Command(n.ctr, append([]string{"--address", n.sock, "--namespace", "k8s.io"}, args...)...)
}

func (n *Node) waitContainerd(within time.Duration) error {
	var last []byte
	for deadline := time.Now().Add(within); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		out, err := n.ctrCmd("version").CombinedOutput()
		if err == nil {
			return nil
		}
		last = out
	}
	return fmt.Errorf("containerd not serving on %s after %v: %s", n.sock, within, last)
}

func (n *Node) waitNode(within time.Duration) error {
	var last error
	for deadline := time.Now().Add(within); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := n.kube.Client.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
		cancel()
		if err == nil {
			return nil
		}
		last = err
	}
	return fmt.Errorf("node %s not registered after %v: %v", n.Name, within, last)
}

// stop takes the node down in order: the pods (so that the kubelet stops
// their containers as it would), the kubelet, whatever containers are
// left, containerd, its orphaned shims, then the mounts, cgroups and files.
func (n *Node) stop(t testing.TB, stopKubelet, stopContainerd func()) {
	if stopKubelet != nil {
		n.deletePods(t)
		stopKubelet()
	}
	for k, v := range n.sysctls {
		if err := os.WriteFile("/proc/sys/"+k, v, 0o644); err != nil {
			t.Logf("kubeletenv: restore %s: %v", k, err)
		}
	}
	if stopContainerd != nil {
		n.removeContainers(t)
		stopContainerd()
	}
	n.killShims(t)
	n.unmountAll(t)
	n.removeCgroups(t)
	if err := os.RemoveAll(n.dir); err != nil {
		t.Logf("kubeletenv: remove %s: %v", n.dir, err)
	}
	links, _ := filepath.Glob(filepath.Join(containerLogLinks, "*.log"))
	for _, l := range links {
		if dst, err := os.Readlink(l); err == nil && strings.HasPrefix(dst, n.dir+"/") {
			os.Remove(l)
		}
	}
	if n.logLinks {
		os.Remove(containerLogLinks) // only when empty
	}
}

// containerLogLinks is where the kubelet links every container's log (a
// fixed path).
const containerLogLinks = "/var/log/containers"

// deletePods deletes the pods bound to the node at once and gives the
// kubelet up to 30s to stop their containers.
func (n *Node) deletePods(t testing.TB) {
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	pods, err := n.kube.Client.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + n.Name})
	if err != nil {
		t.Logf("kubeletenv: list pods: %v", err)
		return
	}
	zero := int64(0)
	for _, p := range pods.Items {
		err := n.kube.Client.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero})
		if err != nil && !apierrors.IsNotFound(err) {
			t.Logf("kubeletenv: delete pod %s/%s: %v", p.Namespace, p.Name, err)
		}
	}
	if len(pods.Items) == 0 {
		return
	}
	for ctx.Err() == nil {
		out, err := n.ctrCmd("tasks", "ls", "-q").Output()
		if err != nil || len(bytes.TrimSpace(out)) == 0 {
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// removeContainers kills and removes every task and container containerd
// still has in the kubelet's namespace.
func (n *Node) removeContainers(t testing.TB) {
	out, _ := n.ctrCmd("tasks", "ls", "-q").Output()
	for _, id := range strings.Fields(string(out)) {
		n.ctrCmd("tasks", "kill", "--signal", "SIGKILL", id).Run()
		if b, err := n.ctrCmd("tasks", "delete", "--force", id).CombinedOutput(); err != nil {
			t.Logf("kubeletenv: delete task %s: %v: %s", id, err, b)
		}
	}
	out, _ = n.ctrCmd("containers", "ls", "-q").Output()
	for _, id := range strings.Fields(string(out)) {
		if b, err := n.ctrCmd("containers", "delete", id).CombinedOutput(); err != nil {
			t.Logf("kubeletenv: delete container %s: %v: %s", id, err, b)
		}
	}
}

// killShims kills, by PID, the containerd shims started for this node's
// containerd (they outlive it by design) and the processes left in them.
func (n *Node) killShims(t testing.TB) {
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil || !bytes.Contains(b, []byte("containerd-shim")) || !bytes.Contains(b, []byte(n.sock)) {
			continue
		}
		pid, err := strconv.Atoi(filepath.Base(filepath.Dir(p)))
		if err != nil {
			continue
		}
		t.Logf("kubeletenv: killing leftover shim %d", pid)
		syscall.Kill(pid, syscall.SIGKILL)
	}
}

// unmountAll detaches every mount under the node's directory, deepest first.
func (n *Node) unmountAll(t testing.TB) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	var mounts []string
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 {
			if mp := unescape(f[4]); mp == n.dir || strings.HasPrefix(mp, n.dir+"/") {
				mounts = append(mounts, mp)
			}
		}
	}
	sort.Slice(mounts, func(i, j int) bool { return len(mounts[i]) > len(mounts[j]) })
	for _, mp := range mounts {
		if err := syscall.Unmount(mp, syscall.MNT_DETACH); err != nil {
			t.Logf("kubeletenv: unmount %s: %v", mp, err)
		}
	}
}

// removeCgroups removes the kubelet's cgroup root, and the cgroups under
// it, from every hierarchy. Processes still in them (containers whose shim
// was killed) are the node's own: they are killed by PID first.
func (n *Node) removeCgroups(t testing.TB) {
	if n.cgroupRoot == "" {
		return
	}
	var dirs []string
	for _, h := range cgroupHierarchies() {
		filepath.WalkDir(filepath.Join(h, n.cgroupRoot), func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
	}
	left := func() (pids []int) {
		for _, d := range dirs {
			b, _ := os.ReadFile(filepath.Join(d, "cgroup.procs"))
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil {
					pids = append(pids, pid)
				}
			}
		}
		return pids
	}
	for i := 0; i < 100; i++ {
		pids := left()
		if len(pids) == 0 {
			break
		}
		if i == 0 {
			t.Logf("kubeletenv: killing processes left in the node's cgroups: %v", pids)
		}
		for _, pid := range pids {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(100 * time.Millisecond)
	}
	sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) }) // children first
	for _, d := range dirs {
		if err := syscall.Rmdir(d); err != nil && !os.IsNotExist(err) {
			t.Logf("kubeletenv: remove cgroup %s: %v", d, err)
		}
	}
}

// nodeIP is the first global unicast IPv4 (else IPv6) address of an
// interface that is up.
func nodeIP() (string, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return "", err
	}
	var v6 string
	for _, ifc := range ifs {
		if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, _ := ifc.Addrs()
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok || !ipn.IP.IsGlobalUnicast() {
				continue
			}
			if ipn.IP.To4() != nil {
				return ipn.IP.String(), nil
			}
			if v6 == "" {
				v6 = ipn.IP.String()
			}
		}
	}
	if v6 != "" {
		return v6, nil
	}
	return "", fmt.Errorf("no non-loopback address for the node (the kubelet refuses a loopback node IP)")
}

// goTool is the go command of the toolchain running the tests.
func goTool() string {
	if p := filepath.Join(runtime.GOROOT(), "bin", "go"); fileExists(p) {
		return p
	}
	return "go"
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// unescape undoes mountinfo's octal escapes (\040 for a space).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// tail returns the last n lines of a file.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
