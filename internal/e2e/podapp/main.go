// Command podapp is the application container of the end-to-end sidecar
// test: it reports to the test, through attache, what it sees of attache at
// its start and at its termination.
//
//	podapp -admin 127.0.0.1:PORT -via http://127.0.0.1:PORT [-term-wait 1s]
//
// At start it asks attache's admin server for /started and sends
// GET /start?started=CODE through attache's listener (-via); either failing
// exits 1, so a start before attache is listening shows as a restart. On
// SIGTERM it waits -term-wait (a classic sidecar would be draining by then),
// asks the admin server for /ready, sends GET /term?ready=CODE through
// attache and exits 0 (1 when that request fails).
package main

import (
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	admin := flag.String("admin", "", "attache's admin `address`")
	via := flag.String("via", "", "`URL` of attache's listener to the test's server")
	termWait := flag.Duration("term-wait", time.Second, "wait after SIGTERM before reporting")
	flag.Parse()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	hc := &http.Client{Timeout: 5 * time.Second}

	started := status(hc, "http://"+*admin+"/started")
	if err := report(hc, *via+"/start?started="+url.QueryEscape(started)); err != nil || started != "200" {
		fmt.Fprintf(os.Stderr, "podapp: start: attache /started %s, report: %v\n", started, err)
		os.Exit(1)
	}
	fmt.Println("podapp: started; attache /started", started)

	<-sig
	fmt.Println("podapp: SIGTERM")
	time.Sleep(*termWait)
	ready := status(hc, "http://"+*admin+"/ready")
	if err := report(hc, *via+"/term?ready="+url.QueryEscape(ready)); err != nil {
		fmt.Fprintf(os.Stderr, "podapp: term: attache /ready %s, report: %v\n", ready, err)
		os.Exit(1)
	}
	fmt.Println("podapp: exiting; attache /ready", ready)
}

// status is the HTTP status code of GET url, or the error.
func status(hc *http.Client, url string) string {
	resp, err := hc.Get(url)
	if err != nil {
		return err.Error()
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return fmt.Sprint(resp.StatusCode)
}

func report(hc *http.Client, url string) error {
	resp, err := hc.Get(url)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s", resp.Status)
	}
	return nil
}
