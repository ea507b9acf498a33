# The greeter example's image (the greeter server and greeter-client): the
# demo's workload, static binaries on distroless, non-root.
#   docker build -f build/greeter.Dockerfile -t tender/greeter .
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/ ./examples/greeter/cmd/...

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/greeter /out/greeter-client /
USER 65532:65532
EXPOSE 8080 9090
ENTRYPOINT ["/greeter"]
