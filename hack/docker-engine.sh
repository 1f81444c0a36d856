#!/usr/bin/env bash
# Makes sure a Docker engine answers and the provider's network exists.
#
# Uses the engine at DOCKER_HOST (or the default socket) when it answers. Otherwise installs
# Debian's docker.io when dockerd is missing, starts dockerd in the background (log:
# $CAPD_RS_CACHE/dockerd.log, pid: $CAPD_RS_CACHE/dockerd.pid), waits until it answers, and
# leaves it running. Finally creates the
# Docker network $CAPD_DOCKER_NETWORK (default "kind") when it is missing.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

engine_answers() { docker version --format '{{.Server.APIVersion}}' >/dev/null 2>&1; }

if ! engine_answers; then
  [[ -z "${DOCKER_HOST:-}" ]] || die "DOCKER_HOST=$DOCKER_HOST is set but no Docker engine answers there.
Start that engine, or unset DOCKER_HOST to let this script start a local one."
  if ! command -v dockerd >/dev/null || ! command -v containerd >/dev/null; then
    [[ $(id -u) == 0 ]] || die "no Docker engine answers and dockerd is not installed; installing it needs root.
Install Docker (Debian: apt-get install docker.io) and start it, or run this script as root."
    log "installing Debian's docker.io (no Docker engine answers and dockerd is missing)"
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -qq && apt-get install -y -qq docker.io; } >"$CAPD_RS_CACHE/apt-docker.log" 2>&1 \
      || die "apt-get install docker.io failed (log: $CAPD_RS_CACHE/apt-docker.log):
$(tail -5 "$CAPD_RS_CACHE/apt-docker.log")
Install a Docker engine by hand and start it, or set DOCKER_HOST to one that runs."
  fi
  command -v docker >/dev/null || die "the docker CLI is missing (Debian: apt-get install docker.io)"
  log "starting dockerd in the background (log: $CAPD_RS_CACHE/dockerd.log)"
  # setsid: the engine outlives this script and the shell that ran it. Its pid tells the tests
  # that this engine is theirs to restart (the engine-restart test).
  setsid nohup dockerd >>"$CAPD_RS_CACHE/dockerd.log" 2>&1 </dev/null &
  echo $! >"$CAPD_RS_CACHE/dockerd.pid"
  for _ in $(seq 1 120); do
    engine_answers && break
    sleep 0.5
  done
  engine_answers || die "dockerd did not answer within 60s; its log ends with:
$(tail -15 "$CAPD_RS_CACHE/dockerd.log")"
fi

log "Docker engine answers (API $(docker version --format '{{.Server.APIVersion}}'))"

if ! docker network inspect "$CAPD_DOCKER_NETWORK" >/dev/null 2>&1; then
  log "creating Docker network $CAPD_DOCKER_NETWORK"
  docker network create "$CAPD_DOCKER_NETWORK" >/dev/null \
    || docker network inspect "$CAPD_DOCKER_NETWORK" >/dev/null \
    || die "cannot create Docker network $CAPD_DOCKER_NETWORK"
fi
