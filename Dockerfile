# The mailnode image: the static binary on an empty base.
#
# No registry is reachable to pull a Go build image from, so the binary is
# built on the host (static, CGO_ENABLED=0) and only copied in; the build
# context is bin/mailnode alone (.dockerignore):
#
#   make build && docker build -t mailcluster/mailnode:dev .
#
# The node keeps everything in /data (a volume). MAILNODE_DATA names it
# for `serve` and for every admin command, so commands run in the
# container need no --data:
#
#   docker compose exec n1 mailnode cluster status
#   docker compose exec -T n1 mailnode user add alice@example.test <<< 'a-password'
#
# There is no shell in the image: health checks exec the binary
# (`mailnode status` answers once the node serves).
FROM scratch
COPY bin/mailnode /usr/local/bin/mailnode
ENV MAILNODE_DATA=/data
VOLUME ["/data"]
# Development ports (see docs/operations.md): SMTP 2525, submission 2587,
# submissions 2465, IMAP 2143, IMAPS 2993, POP3 2110, POP3S 2995, HTTP 2980
# (/metrics, /healthz, /readyz), HTTPS 2443 (the same, the admin API and
# the web admin page) and the cluster port 2700 (mutual TLS
# between nodes; publish it only to the other nodes).
EXPOSE 2525 2587 2465 2143 2993 2110 2995 2980 2443 2700
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/mailnode"]
# Alone, a container is a one-node cluster whose cluster port stays on
# loopback; docker-compose.yml shows the flags of a multi-node cluster
# (--cluster-advertise, --join, a token).
CMD ["serve", "--bind", "0.0.0.0", "--cluster-listen", "127.0.0.1:2700"]
