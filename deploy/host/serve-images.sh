#!/bin/sh
# Serve a directory of guest images over HTTP for the agent to fetch: an
# nginx with its own configuration, pid file and logs (never the system
# nginx's), listening on 127.0.0.1:PORT and, when the bridge address is on
# this host, on that address too (STRATUS_BRIDGE_ADDR, default 10.77.0.1).
#
#   deploy/host/serve-images.sh start DIR PORT
#   deploy/host/serve-images.sh stop DIR PORT      (DIR is ignored)
#   deploy/host/serve-images.sh status DIR PORT
#
# start is idempotent: an instance already serving DIR on PORT is kept, one
# serving another directory on PORT is replaced. Range requests (resumed
# downloads) and HEAD work; directory listings are on.
# The image store (issue 18): DIR/snapshots/ also takes uploads, HTTP PUT
# and DELETE (nginx dav_methods, create_full_put_path): the agents' snapshots
# go there (images.store_url: http://127.0.0.1:PORT/snapshots). Everything
# else stays read-only. The uploads' temporary files are in DIR/.upload-tmp
# (same filesystem: nginx renames them into place), never served.
# snapshots/ holds tenants' private images: only the agents may read, write
# or delete there, never a guest on the bridge. Who may: 127.0.0.1 and the
# addresses or CIDRs in STRATUS_STORE_CLIENTS (space-separated: the other
# hypervisors' addresses when their agents use this store); the rest get
# 403. No listing of snapshots/.
# State: $STRATUS_RUN_DIR/images-http-PORT/ (default /run/stratus/...).
set -eu

usage() { echo "usage: $0 start|stop|status DIR PORT" >&2; exit 2; }
[ $# = 3 ] || usage
cmd=$1 dir=$2 port=$3
case "$port" in ''|*[!0-9]*) echo "serve-images: PORT must be a number, got '$port'" >&2; exit 2 ;; esac
bridge_addr=${STRATUS_BRIDGE_ADDR:-10.77.0.1}
run=${STRATUS_RUN_DIR:-/run/stratus}/images-http-$port
pidfile=$run/nginx.pid

die() { echo "serve-images: error: $*" >&2; exit 1; }
running_pid() {
	p=$(cat "$pidfile" 2>/dev/null || true)
	[ -n "$p" ] && kill -0 "$p" 2>/dev/null && echo "$p"
}
stop() {
	p=$(running_pid || true)
	if [ -z "$p" ]; then
		rm -f "$pidfile"
		return 0
	fi
	kill -QUIT "$p"
	n=0
	while kill -0 "$p" 2>/dev/null; do
		n=$((n + 1))
		[ $n -lt 100 ] || { kill -TERM "$p" 2>/dev/null; sleep 1; break; }
		sleep 0.1
	done
	rm -f "$pidfile"
	echo "serve-images: stopped nginx on port $port"
}

case "$cmd" in
stop) stop; exit 0 ;;
status)
	if p=$(running_pid); then
		echo "serve-images: serving $(cat "$run/root" 2>/dev/null) on port $port (pid $p)"
		exit 0
	fi
	echo "serve-images: not running on port $port"
	exit 3
	;;
start) ;;
*) usage ;;
esac

command -v nginx >/dev/null 2>&1 || die "nginx not found (apt-get install nginx-light, or sh deps/install.sh deps/demo-guest.txt)"
[ -d "$dir" ] || die "$dir is not a directory"
root=$(cd "$dir" && pwd -P)
mkdir -p "$run/tmp" || die "cannot create $run"

if p=$(running_pid); then
	if [ "$(cat "$run/root" 2>/dev/null)" = "$root" ]; then
		echo "serve-images: already serving $root on port $port (pid $p)"
		exit 0
	fi
	stop
fi

listen="    listen 127.0.0.1:$port;"
if ip -o addr show 2>/dev/null | grep -q "inet $bridge_addr/"; then
	listen="$listen
    listen $bridge_addr:$port;"
fi
# Workers read the images: as www-data when it exists (the cache is
# world-readable), else as nobody.
user=nobody
id www-data >/dev/null 2>&1 && user=www-data
# ... and write the snapshots: those two directories are theirs
mkdir -p "$root/snapshots" "$root/.upload-tmp" || die "cannot create $root/snapshots"
chown "$user" "$root/snapshots" "$root/.upload-tmp" 2>/dev/null ||
	chmod 0777 "$root/snapshots" "$root/.upload-tmp" ||
	die "the nginx workers ($user) cannot write $root/snapshots"

allow="            allow 127.0.0.1;"
for c in ${STRATUS_STORE_CLIENTS:-}; do
	case "$c" in
	*[!0-9a-fA-F.:/]* | '') die "STRATUS_STORE_CLIENTS: '$c' is not an address or CIDR" ;;
	esac
	allow="$allow
            allow $c;"
done

cat >"$run/nginx.conf" <<EOF
# Written by deploy/host/serve-images.sh: serves $root
user $user;
worker_processes 1;
pid $pidfile;
error_log $run/error.log warn;
events { worker_connections 256; }
http {
    types {
        application/octet-stream qcow2 img raw iso;
        text/plain txt SHA256SUMS;
    }
    default_type application/octet-stream;
    access_log $run/access.log;
    client_body_temp_path $root/.upload-tmp;
    proxy_temp_path $run/tmp/proxy;
    fastcgi_temp_path $run/tmp/fastcgi;
    uwsgi_temp_path $run/tmp/uwsgi;
    scgi_temp_path $run/tmp/scgi;
    sendfile on;
    server {
$listen
        root $root;
        autoindex on;
        location / { limit_except GET { deny all; } }
        location /.upload-tmp/ { deny all; }
        location /snapshots/ {
$allow
            deny all;
            autoindex off;
            dav_methods PUT DELETE;
            create_full_put_path on;
            dav_access user:rw group:r all:r;
            client_max_body_size 0;
            limit_except GET PUT DELETE { deny all; }
        }
    }
}
EOF
nginx -t -q -e "$run/error.log" -c "$run/nginx.conf" -p "$run" 2>"$run/start.err" ||
	die "nginx rejects $run/nginx.conf: $(cat "$run/start.err")"
nginx -e "$run/error.log" -c "$run/nginx.conf" -p "$run" 2>"$run/start.err" ||
	die "nginx did not start: $(cat "$run/start.err") $(tail -n 3 "$run/error.log" 2>/dev/null)"
echo "$root" >"$run/root"
n=0
until [ -n "$(running_pid || true)" ]; do
	n=$((n + 1))
	[ $n -lt 50 ] || die "nginx wrote no pid file $pidfile (see $run/error.log)"
	sleep 0.1
done
echo "serve-images: serving $root at http://127.0.0.1:$port/$(echo "$listen" | grep -q "$bridge_addr" && echo " and http://$bridge_addr:$port/") (pid $(running_pid))"
