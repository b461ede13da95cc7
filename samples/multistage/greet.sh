#!/bin/sh
echo "hello, ${1:-world} (greet @VERSION@, running as $(id -un))"
