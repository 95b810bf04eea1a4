package cli

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/attache-proxy/attache/internal/config"
)

// probeTimeout bounds the whole request of attache probe: well inside the
// kubelet's default timeoutSeconds of 1.
const probeTimeout = 800 * time.Millisecond

// probeCmd asks a running attache's admin (or probe) server one of its
// probes and returns nil when it answers 200: an exec probe for images
// without a shell or curl. The answer's body goes to stdout, which the
// kubelet keeps in the probe's event.
func probeCmd(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("probe", stderr)
	addr := fs.String("admin", config.DefaultAdminAddress, "admin or probe server `address`")
	pos, err := parse(fs, args)
	if err != nil {
		return ErrUsage
	}
	if len(pos) != 1 || (pos[0] != "ready" && pos[0] != "health" && pos[0] != "started") {
		fmt.Fprintln(stderr, "attache probe: want one of ready, health, started\n\nUsage: attache probe ready|health|started [--admin ADDR]")
		return ErrUsage
	}
	client := &http.Client{Timeout: probeTimeout}
	resp, err := client.Get("http://" + *addr + "/" + pos[0])
	if err != nil {
		fmt.Fprintf(stderr, "attache probe %s: %v\n", pos[0], err)
		return errReported
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 8<<10))
	fmt.Fprint(stdout, string(body))
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(stderr, "attache probe %s: %s answered %s\n", pos[0], *addr, strings.TrimSpace(resp.Status))
		return errReported
	}
	return nil
}
