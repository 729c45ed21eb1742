#!/bin/sh
# Healthy when the broker answers an authenticated client on its plain (loopback) listener:
# identity `health`, whose only right is reading $SYS/broker/uptime. mosquitto_sub reads the
# password from an options file, never from its command line (visible in ps).
set -eu
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
printf -- '-u health\n-P %s\n' "$(cat "${QUBIT_BROKER_HEALTH_PASSWORD_FILE:-/run/secrets/health_password}")" \
  > "$dir/mosquitto_sub"
XDG_CONFIG_HOME=$dir mosquitto_sub -h 127.0.0.1 -p "$QUBIT_BROKER_PORT" -t '$SYS/broker/uptime' -C 1 -W 4 >/dev/null
