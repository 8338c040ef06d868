#!/usr/bin/env bash
# Make .venv exist and hold what a requirements file lists.
# Usage: scripts/venv.sh requirements.txt|requirements-dev.txt
# pip runs only when the requirements are newer than the stamp of the last install.
set -euo pipefail
cd "$(dirname "$0")/.."

requirements=${1:?usage: scripts/venv.sh REQUIREMENTS_FILE}
python=${PYTHON:-python3}

case "$requirements" in
  requirements-dev.txt) stamp=.venv/.installed-dev ;;
  requirements.txt) stamp=.venv/.installed ;;
  *) echo "venv.sh: unknown requirements file $requirements" >&2; exit 2 ;;
esac

if ! .venv/bin/python -c '' 2>/dev/null; then
  "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || { echo "venv.sh: cachetasks needs Python 3.11 or newer ($python is $("$python" -V 2>&1))" >&2; exit 1; }
  echo "venv.sh: creating .venv with $("$python" -V 2>&1)"
  rm -rf .venv
  "$python" -m venv .venv
fi

# requirements-dev.txt includes requirements.txt and requirements-extras.txt: any of them changing means reinstalling.
if [[ ! -e $stamp || $requirements -nt $stamp || requirements.txt -nt $stamp || requirements-extras.txt -nt $stamp ]]; then
  echo "venv.sh: installing $requirements into .venv"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r "$requirements"
  touch "$stamp"
  # The dev requirements install the runtime ones too.
  if [[ $requirements == requirements-dev.txt ]]; then touch .venv/.installed; fi
fi
