# The sidecar image: `sidecar run` (as UID 1337) and `sidecar init`, which
# the injector runs as root with NET_ADMIN and NET_RAW and which needs the
# iptables tools (nft and legacy backends), hence a slim Debian base rather
# than distroless.
#   docker build -f build/sidecar.Dockerfile -t tender/sidecar .
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# The tags are the Makefile's SIDECAR_TAGS.
RUN CGO_ENABLED=0 go build -trimpath -tags disable_pgv,grpcnotrace -ldflags="-s -w" -o /out/sidecar ./cmd/sidecar

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends iptables \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd -g 1337 tender && useradd -u 1337 -g 1337 -M -s /usr/sbin/nologin tender
COPY --from=build /out/sidecar /sidecar
USER 1337:1337
EXPOSE 15000 15001 15006 15090
ENTRYPOINT ["/sidecar"]
CMD ["run"]
