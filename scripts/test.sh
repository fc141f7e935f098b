#!/usr/bin/env bash
# Set up (scripts/setup.sh, with the optional Ray of requirements-ray.txt), check the code style
# (ruff lint and format, settings in pyproject.toml), then run the whole test suite. Extra
# arguments go to pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh" --ray
cd "$ROOT"
.venv/bin/ruff check --quiet .
.venv/bin/ruff format --check --quiet .
exec .venv/bin/python -m pytest "$@"
