#!/usr/bin/env bash
# Set up .venv from requirements.txt and constraints.txt (once, and again when they change;
# requirements-dev.txt too for `test`), then run a command:
#   ./run.sh train [NAME] [options]    ./run.sh predict [NAME] [options]    ./run.sh test
#   ./run.sh check [NAME] [--data DIR]   list every problem with the competition's input files
#   ./run.sh download NAME    ./run.sh submit NAME    ./run.sh scores NAME   (the Kaggle CLI)
set -euo pipefail
cd "$(dirname "$0")"
VENV=.venv

# install FILE into $VENV, held to the exact versions of constraints.txt, unless a stamp says this
# content (of FILE and the constraints) is already there: one stamp per content, so checkouts
# with different files sharing one .venv do not reinstall in turn
install() {
  local file=$1 want stamp
  want=$(cat "$file" constraints.txt | sha1sum | cut -d' ' -f1)
  stamp="$VENV/.installed-${file%.txt}-$want"
  if [ ! -e "$stamp" ]; then
    echo "Setting up $VENV from $file and constraints.txt (first run only; torch takes a few minutes)..." >&2
    # (this machine's pip configuration names local package folders that may be absent: not our problem)
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$file" -c constraints.txt \
      2> >(grep -v '^WARNING: Location .* is ignored' >&2)
    touch "$stamp"
  fi
}

if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip 2>/dev/null || true  # a new venv's pip may be old
fi
install requirements.txt
[ "${1:-}" != test ] || install requirements-dev.txt
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export PATH="$PWD/$VENV/bin:$PATH"  # the kaggle tool, once installed
case "${1:-}" in
  download|submit|scores)
    if ! command -v kaggle >/dev/null; then
      echo "Installing the Kaggle CLI into $VENV from requirements-kaggle.txt (first use only)..." >&2
      "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r requirements-kaggle.txt -c constraints.txt \
        2> >(grep -v '^WARNING: Location .* is ignored' >&2) || true  # compete explains if it is missing
    fi ;;
esac
case "${1:-}" in
  test)
    shift
    exec "$VENV/bin/python" -m pytest -q "$@" ;;  # pytest.ini points at tests/
  ""|-h|--help|help)
    "$VENV/bin/python" -m compete --help
    echo
    echo "  ./run.sh test [pytest options]   run the test suite" ;;
  *)
    exec "$VENV/bin/python" -m compete "$@" ;;
esac
