# attache: build, test, benchmark, lint.
GO      ?= go
BIN     ?= bin/attache
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null)
PKG     := github.com/attache-proxy/attache/internal/cli
LDFLAGS := -s -w -X $(PKG).Version=$(VERSION) -X $(PKG).Commit=$(COMMIT)

.PHONY: build image test test-short bench soak lint fuzz clean

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/attache

# The container image without a container engine: static binaries for each
# platform, assembled by tools/image (its own module) into an OCI layout
# tarball that docker load, podman load and ctr images import accept.
# The commit time dates the image, so a commit always gives the same digest.
IMAGE     ?= attache:$(VERSION)
PLATFORMS ?= amd64 arm64
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
image:
	@for arch in $(PLATFORMS); do \
		echo "image: linux/$$arch"; \
		CGO_ENABLED=0 GOOS=linux GOARCH=$$arch $(GO) build -trimpath -ldflags "$(LDFLAGS)" \
			-o bin/attache-linux-$$arch ./cmd/attache || exit 1; \
	done
	cd tools/image && $(GO) run . -o ../../bin/attache-image.tar -name=$(IMAGE) \
		-version=$(VERSION) -revision=$(COMMIT) -created=$(SOURCE_DATE_EPOCH) \
		$(foreach a,$(PLATFORMS),-bin linux/$(a)=../../bin/attache-linux-$(a))

# The whole suite: unit, component and integration tests against real
# servers (redis-server, RabbitMQ). Missing servers skip locally and fail
# under CI=true.
test: lint
	$(GO) test -race -count=1 -timeout 20m ./...
	cd tools/image && $(GO) vet ./... && $(GO) test -count=1 ./...

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

# Every fuzz target of the module, each for FUZZTIME (CI: a few seconds).
FUZZTIME ?= 30s
fuzz:
	FUZZTIME=$(FUZZTIME) tools/fuzz.sh

clean:
	rm -rf bin
