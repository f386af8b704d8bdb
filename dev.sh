#!/usr/bin/env bash
# neuronmap's two entry points on a fresh machine. Each one does all set-up first (idempotent, cached):
#   ./dev.sh demo   the main job end to end: local Neo4j, train small nets on digits, ingest, cluster
#   ./dev.sh test   lint (ruff, ruff format, mypy), then the test suite against a real Neo4j (what CI runs)
set -euo pipefail
cd "$(dirname "$0")"

setup() {
  if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
  fi
  .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
  # torch is large; pip's cache serves it after the first install on a machine.
  .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
  .venv/bin/neuronmap db fetch
}

# The explorer's tests drive Debian's Chromium through Playwright (no browser download from Playwright's CDN).
browser() {
  if ! command -v chromium >/dev/null; then
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get install -y -q chromium >/dev/null 2>&1 || { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q chromium >/dev/null; }
  fi
}

# mypy sees the installed layout (loaders/ as neuronmap.loaders, ...) through a tree of links under build/.
lint() {
  .venv/bin/ruff check .
  .venv/bin/ruff format --check --quiet .
  rm -rf build/typecheck && mkdir -p build/typecheck/neuronmap
  for f in neuronmap/*.py; do ln -s "../../../$f" "build/typecheck/$f"; done
  for d in loaders service cypher examples; do ln -s "../../../$d" "build/typecheck/neuronmap/$d"; done
  (cd build/typecheck && ../../.venv/bin/mypy --config-file ../../pyproject.toml -p neuronmap)
}

case "${1:-}" in
  setup)
    setup ;;
  demo)
    setup
    shift
    .venv/bin/neuronmap demo "$@" ;;
  lint)
    setup
    lint ;;
  test)
    setup
    browser
    shift
    lint
    .venv/bin/python -m pytest -q --durations=25 "$@" ;;
  *)
    echo "usage: ./dev.sh demo | test [pytest args] | lint | setup" >&2
    exit 2 ;;
esac
