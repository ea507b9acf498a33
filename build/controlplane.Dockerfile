# The control plane image: one static binary on distroless, non-root.
#   docker build -f build/controlplane.Dockerfile -t tender/controlplane .
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/controlplane ./cmd/controlplane

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/controlplane /controlplane
USER 65532:65532
EXPOSE 15010 15014 15017
ENTRYPOINT ["/controlplane"]
