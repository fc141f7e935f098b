#!/usr/bin/env bash
# Set up everything this project needs in ./.venv (idempotent; fast when nothing changed):
#   - the system library for headless MuJoCo rendering (OSMesa; installed with apt when root),
#   - a virtual environment with the pinned Python packages of requirements.txt,
#   - tf-keras without its dependencies (else pip pulls the full 570 MB tensorflow wheel),
#   - with --ray, also the optional requirements-ray.txt (Ray, for launch.py; the tests use it).
# On a machine with an NVIDIA GPU it installs tensorflow[and-cuda] instead of tensorflow-cpu.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
with_ray=0
for arg in "$@"; do
  case "$arg" in
    --ray) with_ray=1;;
    *) echo "error: unknown option $arg (setup.sh takes only --ray)." >&2; exit 2;;
  esac
done

version=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
case "$version" in
  3.10|3.11|3.12) ;;
  *) echo "error: Python 3.10-3.12 is needed, $PYTHON is $version. Set PYTHON=python3.11." >&2; exit 1;;
esac

gpu=0
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then gpu=1; fi

have_lib() { ldconfig -p 2>/dev/null | grep -q "$1"; }
need=()
have_lib libOSMesa.so || need+=(libosmesa6)
if [ "$gpu" = 1 ]; then have_lib libEGL.so || need+=(libegl1); fi
if [ "${#need[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "Installing ${need[*]} (headless MuJoCo rendering) with apt-get."
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "error: headless rendering needs ${need[*]}. Install it with:" >&2
    echo "  sudo apt-get install -y ${need[*]}" >&2
    exit 1
  fi
fi

if [ ! -x .venv/bin/python ]; then
  echo "Creating .venv with $PYTHON ($version)."
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.requirements-stamp
want="$(cat requirements.txt; echo "gpu=$gpu")"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "Installing Python packages into .venv (first time: a few minutes)."
  .venv/bin/python -m pip install -q --upgrade pip
  if [ "$gpu" = 1 ]; then
    grep -v '^tensorflow-cpu' requirements.txt > .venv/requirements-gpu.txt
    echo 'tensorflow[and-cuda]==2.21.0' >> .venv/requirements-gpu.txt
    .venv/bin/python -m pip install -q -r .venv/requirements-gpu.txt
  else
    .venv/bin/python -m pip install -q -r requirements.txt
  fi
  .venv/bin/python -m pip install -q --no-deps tf-keras==2.21.0
  echo "$want" > "$stamp"
fi
# A stamp of its own, so that a later setup without --ray does not reinstall the core packages.
ray_stamp=.venv/.requirements-ray-stamp
if [ "$with_ray" = 1 ] && { [ ! -f "$ray_stamp" ] || [ "$(cat "$ray_stamp")" != "$(cat requirements-ray.txt)" ]; }; then
  echo "Installing the optional packages of requirements-ray.txt into .venv."
  .venv/bin/python -m pip install -q -r requirements-ray.txt
  cat requirements-ray.txt > "$ray_stamp"
fi
echo "Environment ready: $ROOT/.venv (activate with: source .venv/bin/activate)."
