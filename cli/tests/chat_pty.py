#!/usr/bin/env python3
"""Drives `ember chat` through a pseudo-terminal, as a person at a terminal would.

Usage: chat_pty.py MODEL.gguf -- COMMAND...   (COMMAND runs ember, maybe under an emulator)

It asks a question and waits for the reply and its tok/s line, asks for something long
and presses Ctrl-C while the reply streams (the reply stops, the chat goes on), asks
again, uses /reset and /exit, and checks the exit status. Every wait has a deadline.
Prints the transcript; exits non-zero on the first failed expectation.
"""
import os
import pty
import re
import select
import sys
import time

TIMEOUT = float(os.environ.get("EMBER_PTY_TIMEOUT", "120"))


class Term:
    def __init__(self, argv):
        env = dict(os.environ, TERM="xterm", COLUMNS="100", LINES="40")
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            os.execvpe(argv[0], argv, env)
        self.buf = b""
        self.seen = 0  # what expect() has consumed

    def read(self, timeout):
        r, _, _ = select.select([self.fd], [], [], timeout)
        if not r:
            return False
        try:
            data = os.read(self.fd, 4096)
        except OSError:  # EIO: the child closed the terminal
            return None
        if not data:
            return None
        self.buf += data
        sys.stdout.write(data.decode("utf-8", "replace"))
        sys.stdout.flush()
        return True

    def expect(self, pattern, what, timeout=TIMEOUT):
        rx = re.compile(pattern.encode() if isinstance(pattern, str) else pattern)
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.buf, self.seen)
            if m:
                self.seen = m.end()
                return m
            left = deadline - time.monotonic()
            if left <= 0 or self.read(left) is None and not rx.search(self.buf, self.seen):
                fail(f"waited for {what} ({pattern!r})")

    def send(self, text):
        os.write(self.fd, text.encode())

    def wait_exit(self, timeout=TIMEOUT):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(status)
            self.read(0.1)
        fail("ember chat did not exit")


def fail(msg):
    print(f"\nchat_pty: FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def main():
    argv = sys.argv[sys.argv.index("--") + 1:]
    t = Term(argv)
    # rustyline clears the line (ESC [K) before it draws the prompt.
    prompt = r"(\x1b\[K|\n)> "
    t.expect(prompt, "the first prompt")
    t.send("What is the capital of France?\r")
    t.expect(r"Paris", "a reply naming Paris")
    t.expect(r"\[\d+ tokens, [0-9.]+ tok/s", "the speed after the reply")
    t.expect(prompt, "the prompt after the reply")

    # A long reply, interrupted while it streams.
    t.send("Write a very long story about a dragon who learns to fly, with many chapters.\r")
    t.expect(r"\n[^\n>]{12,}", "the story starting to stream")
    t.send("\x03")
    t.expect(r"\[interrupted\]", "the reply to stop on Ctrl-C")
    t.expect(prompt, "the prompt after Ctrl-C (the program goes on)")

    # Ctrl-C at the prompt only clears the line.
    t.send("half a line\x03")
    t.expect(prompt, "a fresh prompt after Ctrl-C on the line")
    # The conversation goes on with its history.
    t.send("What did I ask first? Answer in a few words.\r")
    t.expect(r"tok/s", "a reply after the interrupted one")
    t.expect(prompt, "the prompt")
    t.send("/reset\r")
    t.expect(r"\(conversation reset\)", "/reset")
    t.expect(prompt, "the prompt after /reset")
    t.send("/exit\r")
    code = t.wait_exit()
    if code != 0:
        fail(f"exit status {code}")
    print("\nchat_pty: ok")


if __name__ == "__main__":
    main()
