#!/bin/sh
# The main job (make run).  For now: parse the echo sample and print its plan.
set -e
KILN="$1"
here=$(cd "$(dirname "$0")" && pwd)
"$KILN" parse -f "$here/echo/Dockerfile"
