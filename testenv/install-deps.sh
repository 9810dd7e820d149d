#!/usr/bin/env bash
# Installs what `make test` needs on a fresh Debian 12 machine: the servers
# the integration tests start as throwaway instances (their system services
# are never used). Idempotent: does nothing when everything is present.
set -euo pipefail
pkgs=(postgresql-15 mariadb-server slapd ldap-utils samba samba-ad-dc samba-ad-provision
      python3-samba winbind krb5-user rabbitmq-server socat openssl iproute2 ca-certificates)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing Debian packages: ${missing[*]}"
SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
# Debian starts services on install; we run our own instances, so block that
# (removed again on any exit; a policy-rc.d the machine already has, as in
# Docker images, is left alone).
if [ ! -e /usr/sbin/policy-rc.d ]; then
  trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod +x /usr/sbin/policy-rc.d
fi
$SUDO apt-get update -qq
# env: sudo's env_reset would drop DEBIAN_FRONTEND, and debconf would then
# wait for answers (slapd's admin password) to prompts sent to /dev/null.
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
