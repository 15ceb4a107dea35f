#!/bin/bash
# Entry point of the interop runner image (see interop/Dockerfile).
set -e

# Routing through the network simulator (provided by the endpoint base image).
/setup.sh

case "$ROLE" in
  client)
    # Wait for the simulator before sending anything.
    /wait-for-it.sh sim:57832 -s -t 30
    ;;
  server) ;;
  *)
    echo "unknown ROLE '$ROLE'" >&2
    exit 127
    ;;
esac

[ -n "$QLOGDIR" ] && mkdir -p "$QLOGDIR"
# endpoint.py exits 127 for a TESTCASE it does not support; the server runs until SIGTERM.
exec python3 /interop/endpoint.py
