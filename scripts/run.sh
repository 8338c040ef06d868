#!/usr/bin/env bash
# `make run`: the whole service on this machine, with demo documents that keep starting and finishing.
# Settings come from the environment (see README); .env is docker compose's and is not read here.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/venv.sh requirements.txt
scripts/ensure-services.sh redis

export CACHETASKS_DATA_DIR=${CACHETASKS_DATA_DIR:-data}
mkdir -p "$CACHETASKS_DATA_DIR"
export PATH="$PWD/.venv/bin:$PATH"  # honcho runs each Procfile line through /bin/sh

python -m cachetasks demo

if [[ -z ${FLOWER_BASIC_AUTH:-} ]]; then
  FLOWER_BASIC_AUTH="admin:$(python -c 'import secrets; print(secrets.token_urlsafe(16))')"
  export FLOWER_BASIC_AUTH
  credentials="user admin, password ${FLOWER_BASIC_AUTH#admin:} (generated; set FLOWER_BASIC_AUTH=user:password to choose)"
else
  credentials="user ${FLOWER_BASIC_AUTH%%:*} and the password from FLOWER_BASIC_AUTH"
fi

cat <<MSG

  Flower:       http://127.0.0.1:${FLOWER_PORT:-5555}  ($credentials)
  Cached files: redis-cli -n 1 --scan   (the database of CACHETASKS_REDIS_URL; default redis://127.0.0.1:6379/1)
  Data:         $CACHETASKS_DATA_DIR/ (SQLite task database and the files under storage/)
  Ctrl-C stops everything.

MSG

exec honcho start --env /dev/null -f Procfile.dev
