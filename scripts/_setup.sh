# Sourced by scripts/demo and scripts/test: make .venv (if missing) and install edgecal
# with the extras named in EDGECAL_EXTRAS. Re-runs are quick: the install is redone
# only when pyproject.toml or the extras change.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' || {
        echo "edgecal needs Python >= 3.10; $PY is $("$PY" --version 2>&1). Set PYTHON=/path/to/python3.x" >&2
        exit 2
    }
    echo "creating .venv with $("$PY" --version)" >&2
    "$PY" -m venv .venv
fi
spec=".${EDGECAL_EXTRAS:+[$EDGECAL_EXTRAS]}"
stamp=".venv/.edgecal-$(cat pyproject.toml | cksum | cut -d' ' -f1)-${EDGECAL_EXTRAS:-none}"
if [ ! -f "$stamp" ]; then
    echo "installing edgecal (extras: ${EDGECAL_EXTRAS:-none}) into .venv" >&2
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -e "$spec"
    rm -f .venv/.edgecal-*
    touch "$stamp"
fi
