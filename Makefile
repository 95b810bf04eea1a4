# attache: build, test, benchmark, lint.
GO      ?= go
BIN     ?= bin/attache
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null)
PKG     := github.com/attache-proxy/attache/internal/cli
LDFLAGS := -s -w -X $(PKG).Version=$(VERSION) -X $(PKG).Commit=$(COMMIT)

.PHONY: build test test-short bench lint fuzz clean

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/attache

# The whole suite: unit, component and integration tests against real
# servers (redis-server, RabbitMQ). Missing servers skip locally and fail
# under CI=true.
test: lint
	$(GO) test -race -count=1 -timeout 20m ./...

test-short:
	$(GO) test -short -count=1 ./...

# Go benchmarks, then the peer comparison (needs redis-benchmark, haproxy, socat).
bench: build
	$(GO) test -run '^$$' -bench . -benchtime 2s ./internal/...
	bench/tcp.sh

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

# Every fuzz target of the module, each for FUZZTIME (CI: a few seconds).
FUZZTIME ?= 30s
fuzz:
	FUZZTIME=$(FUZZTIME) tools/fuzz.sh

clean:
	rm -rf bin
