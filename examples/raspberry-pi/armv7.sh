#!/usr/bin/env bash
# Cross-compiles the ember CLI for 32-bit Raspberry Pi OS (armhf) on an x86-64 Debian or
# Ubuntu machine, then prints the greedy token ids of a prompt. Needs, once:
#   sudo apt-get install gcc-arm-linux-gnueabihf libc6-dev-armhf-cross
#   rustup target add armv7-unknown-linux-gnueabihf
# On the PC, RUN="qemu-arm -L /usr/arm-linux-gnueabihf" runs the program under emulation
# (sudo apt-get install qemu-user); on the Pi, copy the binary and run it without RUN.
#
#   examples/raspberry-pi/armv7.sh MODEL.gguf [TOKENS]
set -euo pipefail
model=$1
tokens=${2:-32}

export CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_LINKER=arm-linux-gnueabihf-gcc
cargo build --release -p ember-cli --target armv7-unknown-linux-gnueabihf
ember=target/armv7-unknown-linux-gnueabihf/release/ember

# RUN is a command line (emulator and its arguments), hence unquoted.
# shellcheck disable=SC2086
${RUN:-} "$ember" run -m "$model" -p "The capital of France is" -n "$tokens" --temp 0 --ids
