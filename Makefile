# attache: build, test, benchmark, lint.
GO      ?= go
BIN     ?= bin/attache
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)

.PHONY: build test test-short bench soak lint fuzz clean

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w -X github.com/attache-proxy/attache/internal/cli.Version=$(VERSION)" -o $(BIN) ./cmd/attache

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

# Load through attache while it reloads, rotates certificates and loses
# backends; prints lost and duplicated writes per protocol (bench/soak.sh;
# DURATION=60 per protocol, PROTOCOLS="tcp http redis postgres").
soak: build
	bench/soak.sh

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

fuzz:
	$(GO) test -run '^$$' -fuzz FuzzParse -fuzztime 30s ./internal/config

clean:
	rm -rf bin
