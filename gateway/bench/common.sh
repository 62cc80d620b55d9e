# Shared by the gateway benchmarks (sourced, not run): a temp dir whose processes are stopped
# and which is removed on exit, and the nginx configurations they start.

# Creates $WORK and $PIDS; every pid appended to PIDS is killed on exit, then $WORK removed.
bench_workdir() {
  WORK=$(mktemp -d)
  PIDS=()
  trap bench_cleanup EXIT
}

bench_cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}

# nginx_conf DIR HTTP: a one-worker, foreground nginx configuration whose pid, logs and temp
# files live in DIR, with HTTP (server and upstream blocks) inside its `http { }`.
nginx_conf() {
  local dir=$1 http=$2
  cat <<CONF
worker_processes 1;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $dir; proxy_temp_path $dir; fastcgi_temp_path $dir;
  uwsgi_temp_path $dir; scgi_temp_path $dir;
  keepalive_requests 1000000;
  $http
}
CONF
}

# backend_servers PORT...: nginx servers answering `200` with a 1 KiB body (stand-in workers).
backend_servers() {
  local body port
  body=$(head -c 1024 /dev/zero | tr '\0' 'x')
  for port in "$@"; do
    echo "  server { listen 127.0.0.1:$port; location / { default_type text/plain; return 200 \"$body\"; } }"
  done
}

# nginx_balancer PORT SERVERS: nginx on PORT balancing over SERVERS (`server host:port;` lines)
# with `random two least_conn` and upstream keep-alive.
nginx_balancer() {
  echo "upstream workers { random two least_conn; $2 keepalive 64; }
  server { listen 127.0.0.1:$1;
    location / { proxy_pass http://workers; proxy_http_version 1.1; proxy_set_header Connection \"\"; } }"
}
