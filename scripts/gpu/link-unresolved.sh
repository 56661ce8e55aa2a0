#!/usr/bin/env bash
# Linker for scripts/gpu/pack.sh: the system linker, leaving the LLVM C API undefined
# (resolved at run time by the stub library pack.sh builds).
exec cc "$@" -Wl,--unresolved-symbols=ignore-all
