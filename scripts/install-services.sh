#!/usr/bin/env bash
# Installs the Debian packages of the real services frugalsense runs against, if missing.
# Never starts or enables them: demo and tests start their own copies on free ports.
set -euo pipefail

declare -A binary_of=(
  [mosquitto]=/usr/sbin/mosquitto
  [mosquitto-clients]=/usr/bin/mosquitto_sub
  [influxdb]=/usr/bin/influxd
  [influxdb-client]=/usr/bin/influx
  [victoria-metrics]=/usr/bin/victoria-metrics
)
missing=()
for pkg in mosquitto mosquitto-clients influxdb influxdb-client victoria-metrics; do
  [ -x "${binary_of[$pkg]}" ] || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "frugalsense needs these Debian packages, which are not installed: ${missing[*]}" >&2
  echo "Install them as root, then run make again:" >&2
  echo "  sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "Installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# Keep the packages' own system services from starting (and taking standard ports) where
# the machine has no policy of its own; restore it afterwards.
policy=/usr/sbin/policy-rc.d
added_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && added_policy=1
fi
trap '[ "$added_policy" = 1 ] && rm -f "$policy"' EXIT
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "Installed: ${missing[*]}"
