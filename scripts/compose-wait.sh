#!/usr/bin/env bash
# Waits until the docker compose cluster (docker-compose.yml) has all three
# nodes up as n1 sees them, then prints how to use it. `make compose-up`
# runs it after `docker compose up -d`.
#
# Environment: COMPOSE (default: "docker compose" when the plugin exists,
# else docker-compose), COMPOSE_WAIT (seconds, default 180).
set -euo pipefail

cd "$(dirname "$0")/.."

if [[ -z ${COMPOSE:-} ]]; then
	if docker compose version >/dev/null 2>&1; then
		COMPOSE="docker compose"
	else
		COMPOSE=docker-compose
	fi
fi
read -r -a compose <<<"$COMPOSE"
COMPOSE_WAIT=${COMPOSE_WAIT:-180}
nodes=3

deadline=$((SECONDS + COMPOSE_WAIT))
while :; do
	if out=$("${compose[@]}" exec -T n1 mailnode cluster status --json 2>/dev/null); then
		up=$(grep -c '"health": "up"' <<<"$out" || true)
		((up == nodes)) && break
	fi
	if ((SECONDS >= deadline)); then
		echo "compose: the cluster does not show $nodes nodes up after ${COMPOSE_WAIT}s:" >&2
		"${compose[@]}" ps >&2 || true
		"${compose[@]}" logs --tail 20 >&2 || true
		exit 1
	fi
	sleep 1
done

cat <<EOF

Three nodes serve in containers, published on 127.0.0.1 (node N on the
development ports with N in front): n1 (eu) 12525 SMTP, 12587 submission,
12465 submissions, 12143 IMAP, 12993 IMAPS, 12110 POP3, 12995 POP3S,
12980 HTTP, 12443 HTTPS (web admin page https://localhost:12443/admin/);
n2 (us) 22525...; n3 (ap) 32525...

  $COMPOSE exec n1 mailnode cluster status
  $COMPOSE exec n1 mailnode domain add example.test
  $COMPOSE exec -T n1 mailnode user add alice@example.test <<< 'a-password'
  curl -k --ssl-reqd smtp://localhost:22525 --mail-from bob@example.net \\
       --mail-rcpt alice@example.test --upload-file msg.txt
  curl -k 'imaps://localhost:32993/INBOX;UID=1' -u alice@example.test

Logs: $COMPOSE logs -f n1. Stop with make compose-down (the volumes stay;
$COMPOSE down -v deletes them).
EOF
