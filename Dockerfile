# The mailnode image: the static binary on an empty base.
#
# No registry is reachable to pull a Go build image from, so the binary is
# built on the host (static, CGO_ENABLED=0) and only copied in:
#
#   make build && docker build -t mailcluster/mailnode:dev .
#
# The node keeps everything in /data (a volume); admin commands run in the
# container against the same directory:
#
#   docker exec -i <container> /mailnode user add --data /data alice@example.test <<< 'password'
FROM scratch
COPY bin/mailnode /mailnode
VOLUME ["/data"]
# Development ports (see docs/operations.md); the HTTP port serves
# /metrics, /healthz and /readyz.
EXPOSE 2525 2587 2465 2143 2993 2110 2995 2980
STOPSIGNAL SIGTERM
ENTRYPOINT ["/mailnode"]
CMD ["serve", "--data", "/data", "--bind", "0.0.0.0"]
