#!/usr/bin/env bash
# Builds the two images of dynamic-volumes for your registry and prints the kustomize `images:`
# block that points the manifests at them:
#
#   scripts/images.sh --registry REG [--tag T] [--push] [--platform linux/amd64,linux/arm64]
#                     [--build-arg NAME=VALUE]... [--no-pin-base] [--dry-run]
#
#   REG/webhook:T  from Dockerfile.webhook
#   REG/agent:T    from Dockerfile.agent (the agent and the mounter)
#
# The tag defaults to the version in package.json. `docker buildx build` is used when buildx is
# installed, `docker build` otherwise (one platform only, and --platform needs buildx for several).
# --dry-run prints the commands instead of running them. Extra build arguments (for instance
# GEESEFS_SHA256_ARM64, see Dockerfile.agent) go through --build-arg NAME=VALUE.
#
# The base image is pinned by digest at every run, so that a release records what it was built on:
# the tag of `ARG NODE_IMAGE=` in the Dockerfiles (node:24-slim) is resolved with
# `docker buildx imagetools inspect` (which needs buildx and the registry) and both builds get
# --build-arg NODE_IMAGE=node:24-slim@sha256:<digest>, also shown in the printed block. To choose
# the base yourself pass --build-arg NODE_IMAGE=...; --no-pin-base builds from the tag as it is.
# --dry-run resolves it too when buildx is installed, and shows a placeholder digest otherwise.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

usage() {
  sed -n '2,21s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
}

die() {
  echo "images.sh: $*" >&2
  exit 1
}

registry=""
tag=""
push=0
platform=""
dry_run=0
pin_base=1
build_args=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --registry) [[ $# -ge 2 ]] || die "--registry needs a value"; registry="$2"; shift 2 ;;
    --registry=*) registry="${1#*=}"; shift ;;
    --tag) [[ $# -ge 2 ]] || die "--tag needs a value"; tag="$2"; shift 2 ;;
    --tag=*) tag="${1#*=}"; shift ;;
    --platform) [[ $# -ge 2 ]] || die "--platform needs a value"; platform="$2"; shift 2 ;;
    --platform=*) platform="${1#*=}"; shift ;;
    --build-arg) [[ $# -ge 2 ]] || die "--build-arg needs a value"; build_args+=(--build-arg "$2"); shift 2 ;;
    --build-arg=*) build_args+=(--build-arg "${1#*=}"); shift ;;
    --push) push=1; shift ;;
    --dry-run) dry_run=1; shift ;;
    --no-pin-base) pin_base=0; shift ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done

[[ -n "$registry" ]] || die "--registry is required, for example --registry registry.example.com/dynamic-volumes"
registry="${registry%/}"

if [[ -z "$tag" ]]; then
  # The version from package.json, without jq: the first "version" key at the top level.
  tag="$(sed -n 's/^  "version": *"\([^"]*\)".*/\1/p' "$ROOT/package.json" | head -n 1)"
  [[ -n "$tag" ]] || die "cannot read the version from $ROOT/package.json; pass --tag"
fi

if [[ $dry_run -eq 0 ]]; then
  command -v docker > /dev/null 2>&1 \
    || die "docker not found in PATH; install Docker (with buildx for --platform or --push of several platforms), or use --dry-run to see the commands"
  docker info > /dev/null 2>&1 \
    || die "docker cannot reach a Docker daemon ('docker info' fails); start it, or use --dry-run to see the commands"
fi

# buildx when available. In a dry run without docker, show the buildx form.
have_docker=0
if command -v docker > /dev/null 2>&1; then
  have_docker=1
fi
buildx=1
if [[ $have_docker -eq 1 ]] && ! docker buildx version > /dev/null 2>&1; then
  buildx=0
fi
if [[ $buildx -eq 0 && "$platform" == *,* ]]; then
  die "--platform $platform names several platforms: that needs docker buildx"
fi

# A command as one line of shell: words that need quoting are single-quoted, so that a dry run
# can be pasted as it is (including the '{{json .Manifest}}' of the digest resolution).
show() {
  local arg q="'" line=""
  for arg in "$@"; do
    if [[ -z "$arg" || "$arg" == *[!A-Za-z0-9_./:=@,+%-]* ]]; then
      arg="'${arg//$q/$q\\$q$q}'"
    fi
    line+="${line:+ }$arg"
  done
  printf '%s\n' "$line"
}

run() {
  if [[ $dry_run -eq 1 ]]; then
    show "$@"
  else
    "$@"
  fi
}

# The base image. Both Dockerfiles must default to the same tag: the digest resolved here is
# passed to both builds.
dockerfile_base() {
  sed -n '/^ARG NODE_IMAGE=/{s/^ARG NODE_IMAGE=//;s/[[:space:]]*$//;p;q;}' "$ROOT/$1"
}
base_ref="$(dockerfile_base Dockerfile.agent)"
[[ -n "$base_ref" ]] || die "cannot read the base image from the 'ARG NODE_IMAGE=' line of $ROOT/Dockerfile.agent"
webhook_base_ref="$(dockerfile_base Dockerfile.webhook)"
[[ "$webhook_base_ref" == "$base_ref" ]] \
  || die "Dockerfile.webhook has ARG NODE_IMAGE=${webhook_base_ref:-(none)} but Dockerfile.agent has ARG NODE_IMAGE=$base_ref; set the same base image in both"

# An explicit --build-arg NODE_IMAGE (the last one, as docker takes it) wins over the pinning.
# `--build-arg NODE_IMAGE` without a value makes docker read it from the environment.
base_given=0
for arg in "${build_args[@]}"; do
  case "$arg" in
    NODE_IMAGE=*) base_given=1; base_image="${arg#NODE_IMAGE=}" ;;
    NODE_IMAGE) base_given=1; base_image="${NODE_IMAGE:-}" ;;
  esac
done

inspect_cmd=(docker buildx imagetools inspect --format '{{json .Manifest}}' "$base_ref")
inspect_line="$(show "${inspect_cmd[@]}")"
pin_hint="pass --build-arg NODE_IMAGE=$base_ref@sha256:<digest> to pin it yourself, or --no-pin-base to build from the tag"

# The digest of the index `docker buildx imagetools inspect` shows for the base tag: the digest of
# the multi-platform index, the same for every platform built. Its JSON has the index's own
# "digest" key before those of the platform manifests, so the first one is the index's.
# Sets base_digest, or dies with one line that says what failed.
resolve_base_digest() {
  local errfile out digest err got
  errfile="$(mktemp)"
  if ! out="$("${inspect_cmd[@]}" 2> "$errfile")"; then
    err="$(sed -n '/[^[:space:]]/{p;q;}' "$errfile")"
    rm -f "$errfile"
    die "cannot resolve the digest of the base image $base_ref: $inspect_line failed (${err:-no message}); $pin_hint"
  fi
  rm -f "$errfile"
  digest="$(printf '%s\n' "$out" | grep -o '"digest"[[:space:]]*:[[:space:]]*"[^"]*"' \
    | sed -n '1s/^"digest"[[:space:]]*:[[:space:]]*"\([^"]*\)"$/\1/p')" || true
  if ! [[ "$digest" =~ ^sha256:[0-9a-f]{64}$ ]]; then
    got="${digest:-no \"digest\" key}"
    die "cannot resolve the digest of the base image $base_ref: $inspect_line printed no digest of sha256: and 64 lowercase hex digits (got: ${got:0:80}); $pin_hint"
  fi
  base_digest="$digest"
}

if [[ $base_given -eq 1 ]]; then
  echo "images.sh: base image $base_image (--build-arg NODE_IMAGE)" >&2
elif [[ $pin_base -eq 0 ]]; then
  base_image="$base_ref (not pinned: --no-pin-base)"
  echo "images.sh: base image $base_image" >&2
elif [[ $have_docker -eq 1 && $buildx -eq 1 ]]; then
  # Read-only: a dry run resolves too, so that it shows the build arguments of a real run.
  resolve_base_digest
  base_image="$base_ref@$base_digest"
  build_args+=(--build-arg "NODE_IMAGE=$base_image")
  echo "images.sh: base image $base_image" >&2
elif [[ $dry_run -eq 1 ]]; then
  # Nothing to resolve with: show the command a real run uses, and a placeholder for its result.
  if [[ $have_docker -eq 1 ]]; then
    echo "images.sh: docker buildx is not available: a real run fails to pin the base image; $pin_hint" >&2
  fi
  echo "$inspect_line"
  base_image="$base_ref@sha256:<digest of $base_ref>"
  build_args+=(--build-arg "NODE_IMAGE=$base_image")
else
  die "docker buildx is not available, and pinning the base image needs it ($inspect_line); install buildx, or $pin_hint"
fi

build() {
  local name="$1" dockerfile="$2"
  local image="$registry/$name:$tag"
  local cmd
  if [[ $buildx -eq 1 ]]; then
    cmd=(docker buildx build --file "$ROOT/$dockerfile" --tag "$image")
    [[ -z "$platform" ]] || cmd+=(--platform "$platform")
    if [[ $push -eq 1 ]]; then
      cmd+=(--push)
    elif [[ "$platform" != *,* ]]; then
      # One platform: load it into the local image store. Several cannot be loaded; they stay in
      # the build cache unless pushed.
      cmd+=(--load)
    fi
    cmd+=("${build_args[@]}" "$ROOT")
    run "${cmd[@]}"
  else
    cmd=(docker build --file "$ROOT/$dockerfile" --tag "$image")
    [[ -z "$platform" ]] || cmd+=(--platform "$platform")
    cmd+=("${build_args[@]}" "$ROOT")
    run "${cmd[@]}"
    [[ $push -eq 0 ]] || run docker push "$image"
  fi
}

build webhook Dockerfile.webhook
build agent Dockerfile.agent

cat << BLOCK

# Add this to the kustomization.yaml of your overlay (see manifests/overlays/example-registry/
# and docs/install.md), then: kubectl apply -k <your overlay>
# base image: $base_image
images:
  - name: ghcr.io/dynamic-volumes/webhook
    newName: $registry/webhook
    newTag: "$tag"
  - name: ghcr.io/dynamic-volumes/agent
    newName: $registry/agent
    newTag: "$tag"
BLOCK
