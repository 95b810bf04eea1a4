# attache's container image, for a machine with a container engine:
#
#   docker build --build-arg VERSION="$(git describe --tags --always --dirty)" \
#     --build-arg COMMIT="$(git rev-parse --short=12 HEAD)" -t attache:dev .
#
# (docker buildx build --platform linux/amd64,linux/arm64 ... for both.)
# `make image` assembles the same image without an engine: docs/image.md.

ARG GO_VERSION=1.26.8

# The static binary, cross-compiled on the build machine's platform.
FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
ARG TARGETOS=linux
ARG TARGETARCH
ARG VERSION=dev
ARG COMMIT=
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY cmd cmd
COPY internal internal
RUN CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH go build -trimpath \
    -ldflags "-s -w -X github.com/attache-proxy/attache/internal/cli.Version=${VERSION} -X github.com/attache-proxy/attache/internal/cli.Commit=${COMMIT}" \
    -o /out/attache ./cmd/attache

# No shell, no package manager: the binary, CA roots, passwd/group, tzdata.
FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=dev
ARG COMMIT=
# No LICENSE file in the repository yet, so no org.opencontainers.image.licenses.
LABEL org.opencontainers.image.source="https://github.com/attache-proxy/attache" \
      org.opencontainers.image.title="attache" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${COMMIT}"
COPY --from=build /out/attache /attache
USER 65532:65532
STOPSIGNAL SIGTERM
ENTRYPOINT ["/attache"]
