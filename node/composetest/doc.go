// Package composetest is the docker compose end-to-end test of the
// three-node cluster: docker-compose.yml and the Dockerfile as operators
// use them, n1 (eu), n2 (us) and n3 (ap) in containers.
//
// The test is behind the build tag "compose" so that `go test ./...`
// never starts containers; `make compose-test` runs it:
//
//	go test -tags compose -count=1 -v ./node/composetest/
//
// It delivers through one node and reads through another, kills the
// leader of a user's mail shard with SIGKILL while mail is being
// delivered, checks that every message acknowledged with 250 is found
// exactly once through IMAP on a surviving node, restarts the killed
// container and waits for it to catch up, then removes the containers,
// volumes, network and image it created.
//
// Invariants: every wait has a deadline; the compose project name
// (random, or $MAILCLUSTER_COMPOSE_PROJECT), the image tag (the project
// name) and the host ports (free ones, chosen by Docker) are the test's
// own, so it runs beside `make cluster` or a developer's compose cluster.
// Without a Docker engine the test skips, unless the environment variable
// CI is set: then it fails. $MAILNODE_BIN names a binary to put in the
// image instead of building one; $MAILCLUSTER_COMPOSE the compose command.
package composetest
