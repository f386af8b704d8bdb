#!/usr/bin/env bash
# neuronmap's two entry points on a fresh machine. Each one does all set-up first (idempotent, cached):
#   ./dev.sh demo   the main job end to end: local Neo4j, train small nets on digits, ingest, cluster
#   ./dev.sh test   the test suite against a real Neo4j (what CI runs)
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

case "${1:-}" in
  setup)
    setup ;;
  demo)
    setup
    shift
    .venv/bin/neuronmap demo "$@" ;;
  test)
    setup
    shift
    .venv/bin/python -m pytest -q "$@" ;;
  *)
    echo "usage: ./dev.sh demo | test [pytest args] | setup" >&2
    exit 2 ;;
esac
