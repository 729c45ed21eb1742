#!/bin/sh
# Mosquitto with the mounted config plus the two listeners, whose addresses and ports come
# from the environment (a config file cannot read it): the plain one for local tools, bound
# to loopback by default, and the TLS one every service, Layer 3 and SCADA use.
set -eu
conf=/tmp/mosquitto.conf
secrets=${QUBIT_BROKER_SECRETS:-/run/secrets/broker}
{
  cat /mosquitto/config/mosquitto.conf
  echo "password_file $secrets/passwords"
  echo "acl_file $secrets/acl"
  echo "listener $QUBIT_BROKER_PORT $QUBIT_BROKER_BIND"
  echo "listener $QUBIT_BROKER_TLS_PORT $QUBIT_BROKER_TLS_BIND"
  echo "certfile $secrets/server.crt"
  echo "keyfile $secrets/server.key"
} > "$conf"
exec mosquitto -c "$conf"
