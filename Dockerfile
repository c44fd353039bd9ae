# syntax=docker/dockerfile:1
# The bridge as a static, non-root image:
#   docker build --build-arg VERSION=$(git describe --tags --always) -t ghcr.io/ccaas/presence-bridge:dev .
#   docker run --rm ghcr.io/ccaas/presence-bridge:dev version

FROM golang:1.26 AS build
WORKDIR /src
ARG VERSION=dev
# Modules first, so that a change to the code does not download them again.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOFLAGS=-mod=readonly \
    go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/bridge ./cmd/bridge \
    && /out/bridge version

# distroless static: CA certificates, /etc/passwd with nonroot (65532), no
# shell, no package manager.
FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=dev
LABEL org.opencontainers.image.title="ccaas-presence-bridge" \
      org.opencontainers.image.description="Dynamics 365 Contact Center agent presence as CloudEvents on NATS JetStream" \
      org.opencontainers.image.source="https://github.com/ccaas/presence-bridge" \
      org.opencontainers.image.version="${VERSION}"
COPY --from=build /out/bridge /bridge
USER 65532:65532
EXPOSE 8080
ENV BRIDGE_HTTP_ADDR=:8080
ENTRYPOINT ["/bridge"]
CMD ["run"]
