#!/bin/sh
# Mosquitto with the shipped config (mosquitto/mosquitto.conf, mounted), whose listener and
# file lines are replaced here: the ports and addresses come from the environment (a config
# file cannot read it), the credentials from the mounted qubit-credentials directory. The
# plain listener is for local tools and bound to loopback by default; the TLS one is what
# every service, Layer 3 and SCADA use.
set -eu
conf=/tmp/mosquitto.conf
secrets=${QUBIT_BROKER_SECRETS:-/mosquitto/secrets/broker}
{
  grep -Ev '^(listener|password_file|acl_file|cafile|certfile|keyfile|tls_version|persistence_location|log_dest) ' \
    /mosquitto/config/mosquitto.conf
  echo "persistence_location /mosquitto/data/"
  echo "log_dest stdout"
  echo "connection_messages true"
  echo "password_file $secrets/passwords"
  echo "acl_file $secrets/acl"
  echo "listener $QUBIT_BROKER_PORT $QUBIT_BROKER_BIND"
  echo "listener $QUBIT_BROKER_TLS_PORT $QUBIT_BROKER_TLS_BIND"
  echo "certfile $secrets/server.crt"
  echo "keyfile $secrets/server.key"
  echo "tls_version tlsv1.2"
} > "$conf"
exec mosquitto -c "$conf"
