// Command soak is the load driver and the toy backends of bench/soak.sh:
//
//	soak echo -addr ADDR                 a TCP echo server
//	soak web -addr ADDR -log FILE        an HTTP server that records POSTed ids in FILE
//	soak header                          the heading of the table load prints
//	soak load -proto P -addr ADDR ...    client load through attache, then the check
//
// The backends stop gracefully on SIGTERM (stop accepting, finish what is in
// flight, bounded) and die at once on SIGKILL. web appends each id with one
// write(2) to a file opened O_APPEND before it answers, so what it
// acknowledged survives a SIGKILL of its process.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

func main() {
	log.SetFlags(0)
	log.SetPrefix("soak: ")
	if len(os.Args) < 2 {
		log.Fatal("usage: soak echo|web|header|load [flags]")
	}
	args := os.Args[2:]
	switch os.Args[1] {
	case "echo":
		runEcho(args)
	case "web":
		runWeb(args)
	case "header":
		fmt.Println(header())
	case "load":
		os.Exit(runLoad(args))
	default:
		log.Fatalf("unknown command %q", os.Args[1])
	}
}

// terminated is closed at the first SIGTERM or SIGINT.
func terminated() <-chan struct{} {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGTERM, syscall.SIGINT)
	done := make(chan struct{})
	go func() { <-ch; close(done) }()
	return done
}

// runEcho echoes every connection's bytes back. On SIGTERM it stops
// accepting, gives open connections up to a second to end, then exits.
func runEcho(args []string) {
	fs := flag.NewFlagSet("echo", flag.ExitOnError)
	addr := fs.String("addr", "127.0.0.1:0", "listen address")
	fs.Parse(args)
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	var wg sync.WaitGroup
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				io.Copy(c, c)
				c.Close()
				mu.Lock()
				delete(conns, c)
				mu.Unlock()
			}()
		}
	}()
	<-terminated()
	ln.Close()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Second):
	}
	mu.Lock()
	for c := range conns {
		c.Close()
	}
	mu.Unlock()
}

// runWeb serves GET /get (200 "ok"), GET /healthz and POST /write, whose
// body is an id: it is appended to the log file, then answered
// "stored ID". On SIGTERM it shuts down gracefully (http.Server.Shutdown,
// bounded by 5 s).
func runWeb(args []string) {
	fs := flag.NewFlagSet("web", flag.ExitOnError)
	addr := fs.String("addr", "127.0.0.1:0", "listen address")
	logPath := fs.String("log", "", "file the POSTed ids are appended to")
	fs.Parse(args)
	f, err := os.OpenFile(*logPath, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		log.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /get", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") })
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") })
	mux.HandleFunc("POST /write", func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(io.LimitReader(r.Body, 64))
		id, perr := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		if err != nil || perr != nil {
			http.Error(w, "bad id", http.StatusBadRequest)
			return
		}
		if _, err := f.Write([]byte(strconv.FormatInt(id, 10) + "\n")); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		fmt.Fprintf(w, "stored %d", id)
	})
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-terminated()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Fatal(err)
	}
}

// readIDs counts the ids in web log files, one per line.
func readIDs(paths []string) (map[int64]int, error) {
	counts := map[int64]int{}
	for _, p := range paths {
		f, err := os.Open(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			id, err := strconv.ParseInt(sc.Text(), 10, 64)
			if err != nil {
				f.Close()
				return nil, fmt.Errorf("%s: %q: %w", p, sc.Text(), err)
			}
			counts[id]++
		}
		f.Close()
		if err := sc.Err(); err != nil {
			return nil, err
		}
	}
	return counts, nil
}
