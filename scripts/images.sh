#!/usr/bin/env bash
# Builds the two images of dynamic-volumes for your registry and prints the kustomize `images:`
# block that points the manifests at them:
#
#   scripts/images.sh --registry REG [--tag T] [--push] [--platform linux/amd64,linux/arm64] [--dry-run]
#
#   REG/webhook:T  from Dockerfile.webhook
#   REG/agent:T    from Dockerfile.agent (the agent and the mounter)
#
# The tag defaults to the version in package.json. `docker buildx build` is used when buildx is
# installed, `docker build` otherwise (one platform only, and --platform needs buildx for several).
# --dry-run prints the commands instead of running them. Extra build arguments (for instance
# GEESEFS_SHA256_ARM64 or NODE_IMAGE, see Dockerfile.agent) go through --build-arg NAME=VALUE.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

usage() {
  sed -n '2,13s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
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
buildx=1
if command -v docker > /dev/null 2>&1 && ! docker buildx version > /dev/null 2>&1; then
  buildx=0
fi
if [[ $buildx -eq 0 && "$platform" == *,* ]]; then
  die "--platform $platform names several platforms: that needs docker buildx"
fi

run() {
  if [[ $dry_run -eq 1 ]]; then
    printf '%q ' "$@" | sed 's/ $//'
    echo
  else
    "$@"
  fi
}

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
images:
  - name: ghcr.io/dynamic-volumes/webhook
    newName: $registry/webhook
    newTag: "$tag"
  - name: ghcr.io/dynamic-volumes/agent
    newName: $registry/agent
    newTag: "$tag"
BLOCK
