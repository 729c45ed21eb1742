#!/usr/bin/env bash
# Make sure a `mosquitto` broker binary exists; install it on Debian/Ubuntu if missing.
set -euo pipefail
if command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ]; then
  exit 0
fi
if command -v apt-get >/dev/null 2>&1; then
  echo "mosquitto is not installed; installing it with apt-get (Debian/Ubuntu)"
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q mosquitto
  # The package starts a system broker on 1883; ours run on their own ports, so it may stay.
  exit 0
fi
cat >&2 <<'MSG'
mosquitto (the MQTT broker) is required and could not be installed automatically.
Install it with your package manager, e.g.:
  macOS:   brew install mosquitto
  Fedora:  sudo dnf install mosquitto
  Alpine:  sudo apk add mosquitto
or run one in Docker and point QUBIT_MQTT_HOST/QUBIT_MQTT_PORT at it.
MSG
exit 1
