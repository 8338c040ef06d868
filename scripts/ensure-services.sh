#!/usr/bin/env bash
# Make the local services answer, starting (or installing, as root) what is missing.
# Usage: scripts/ensure-services.sh redis [postgres] [mariadb] [chromium]
#   redis     127.0.0.1:6379, answering PING
#   postgres  127.0.0.1:5432, answering pg_isready
#   mariadb   127.0.0.1:3306 (RAGFlow's default database is MySQL), accepting connections
#   chromium  /usr/bin/chromium, for the browser test of Flower (Debian's package, not Playwright's download)
#   azurite   Azurite (Azure Storage's emulator) from the npm registry in .tools/azurite, for the Azure Blob tests
set -euo pipefail

[[ $# -gt 0 ]] || set -- redis

redis_answers() {
  # Plain bash, so that no client needs to be installed to ask.
  local reply=""
  { exec 3<>/dev/tcp/127.0.0.1/6379; } 2>/dev/null || return 1
  printf 'PING\r\n' >&3
  IFS= read -r -t 2 reply <&3 || true
  exec 3<&- 3>&-
  [[ $reply == +PONG* ]]
}

postgres_answers() {
  pg_isready -q -h 127.0.0.1 -p 5432
}

mariadb_answers() {
  { exec 4<>/dev/tcp/127.0.0.1/3306; } 2>/dev/null || return 1
  exec 4<&- 4>&-
}

wait_for() {  # wait_for NAME CHECK: up to 30 s
  local name=$1 check=$2
  for _ in $(seq 60); do
    if "$check"; then echo "ensure-services: $name is up"; return 0; fi
    sleep 0.5
  done
  echo "ensure-services: $name did not answer within 30 s" >&2
  return 1
}

apt_install() {
  if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
    echo "ensure-services: $1 is not installed; install it (Debian/Ubuntu: apt-get install $1)" >&2
    return 1
  fi
  echo "ensure-services: installing $1 with apt-get"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >/dev/null
}

ensure_redis() {
  if redis_answers; then echo "ensure-services: redis is up"; return 0; fi
  command -v redis-server >/dev/null || apt_install redis-server
  # The package may have started its own server.
  if redis_answers; then echo "ensure-services: redis is up"; return 0; fi
  local dir=/var/lib/redis logdir=/var/log/redis
  if ! mkdir -p "$dir" "$logdir" 2>/dev/null || [[ ! -w $dir || ! -w $logdir ]]; then
    dir=${TMPDIR:-/tmp}/cachetasks-redis
    logdir=$dir
    mkdir -p "$dir"
  fi
  echo "ensure-services: starting redis-server on 127.0.0.1:6379 (log: $logdir/ci.log)"
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir "$dir" --logfile "$logdir/ci.log" --pidfile "$dir/redis.pid"
  wait_for redis redis_answers
}

ensure_postgres() {
  if command -v pg_isready >/dev/null && postgres_answers; then echo "ensure-services: postgres is up"; return 0; fi
  if ! command -v pg_ctlcluster >/dev/null || [[ ! -d /etc/postgresql ]]; then
    # Tests that need PostgreSQL skip without it on a laptop and fail under CI.
    echo "ensure-services: PostgreSQL is not installed; its tests will not run (apt-get install postgresql)" >&2
    if [[ ${CI:-} == true ]]; then return 1; fi
    return 0
  fi
  local version
  version=$(find /etc/postgresql -mindepth 1 -maxdepth 1 -type d -printf '%f\n' | sort -V | tail -n 1)
  echo "ensure-services: starting PostgreSQL $version (cluster main)"
  pg_ctlcluster --skip-systemctl-redirect "$version" main start
  wait_for postgres postgres_answers
}

ensure_mariadb() {
  if mariadb_answers; then echo "ensure-services: mariadb is up"; return 0; fi
  if [[ ! -x /usr/sbin/mariadbd ]]; then
    # Tests that need MariaDB skip without it on a laptop and fail under CI.
    echo "ensure-services: MariaDB is not installed; its tests will not run (apt-get install mariadb-server)" >&2
    if [[ ${CI:-} == true ]]; then return 1; fi
    return 0
  fi
  echo "ensure-services: starting MariaDB"
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
  wait_for mariadb mariadb_answers
}

ensure_chromium() {
  if [[ -x /usr/bin/chromium ]]; then echo "ensure-services: chromium is installed"; return 0; fi
  apt_install chromium
}

AZURITE_VERSION=3.37.0
ensure_azurite() {
  local dir=.tools/azurite
  if [[ -x $dir/node_modules/.bin/azurite-blob ]]; then echo "ensure-services: azurite is installed"; return 0; fi
  if ! command -v npm >/dev/null; then
    # Tests that need Azurite skip without it on a laptop and fail under CI.
    echo "ensure-services: npm is not installed; the Azure Blob tests will not run (apt-get install npm)" >&2
    if [[ ${CI:-} == true ]]; then return 1; fi
    return 0
  fi
  echo "ensure-services: installing azurite@$AZURITE_VERSION with npm into $dir (git-ignored)"
  mkdir -p "$dir"
  (cd "$dir" && npm install --no-audit --no-fund --loglevel=error "azurite@$AZURITE_VERSION" >/dev/null)
}

cd "$(dirname "$0")/.."
for service in "$@"; do
  case "$service" in
    redis) ensure_redis ;;
    postgres) ensure_postgres ;;
    mariadb) ensure_mariadb ;;
    chromium) ensure_chromium ;;
    azurite) ensure_azurite ;;
    *) echo "ensure-services: unknown service $service" >&2; exit 2 ;;
  esac
done
