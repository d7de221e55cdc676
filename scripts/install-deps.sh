#!/usr/bin/env bash
# Installs what building and testing MsgNet needs on Debian, only when it is missing.
set -euo pipefail
need=()
pkg-config --exists libprotobuf-c 2>/dev/null || need+=(libprotobuf-c-dev pkg-config)
pkg-config --exists libcrypto 2>/dev/null || need+=(libssl-dev pkg-config)
command -v protoc-c >/dev/null 2>&1 || need+=(protobuf-c-compiler)
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
  echo "install-deps: installing ${need[*]}" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
