#!/usr/bin/env python3
"""Drive an interactive console client through a pseudo-terminal, as a user
at a terminal would (the client sees a tty: raw mode, Ctrl-] to leave).

  console_pty.py [--timeout S] [--log FILE] STEP... -- CMD ARG...

STEP is send:TEXT (Python escapes: \\r, \\x1d) or expect:TEXT (waits until
TEXT appears in the output after the previous expect). After the steps the
client must exit by itself with status 0 and leave the terminal as it found
it (ICANON, ECHO).
STEP sleep:S: read output for S seconds. STEP rtt:N: N times, type one character and time until it is echoed back;
prints "rtt_ms min median p90" (bench/console/run.sh).
"""
import os
import pty
import select
import sys
import termios
import time


def main():
    args = sys.argv[1:]
    timeout, log = 60.0, None
    while args and args[0].startswith("--") and args[0] != "--":
        opt = args.pop(0)
        if opt == "--timeout":
            timeout = float(args.pop(0))
        elif opt == "--log":
            log = args.pop(0)
    sep = args.index("--")
    steps, cmd = args[:sep], args[sep + 1:]
    pid, fd = pty.fork()
    if pid == 0:
        os.execvp(cmd[0], cmd)
    before = termios.tcgetattr(fd)
    out = b""
    seen = 0
    deadline = time.monotonic() + timeout

    def pump(wait):
        nonlocal out
        r, _, _ = select.select([fd], [], [], wait)
        if r:
            try:
                b = os.read(fd, 65536)
            except OSError:
                return False
            if not b:
                return False
            out += b
        return True

    def fail(msg):
        tail = out[-600:].decode(errors="replace")
        sys.stderr.write(f"console_pty: {msg}\n--- output tail ---\n{tail}\n")
        if log:
            open(log, "wb").write(out)
        try:
            os.kill(pid, 9)
        except OSError:
            pass
        sys.exit(1)

    def probe(rtt):
        times = []
        for i in range(rtt):
            ch = b"abcdefghij"[i % 10:i % 10 + 1]
            mark = len(out)
            t0 = time.perf_counter()
            os.write(fd, ch)
            while out.find(ch, mark) < 0:
                if not pump(5) or time.monotonic() > deadline + 60:
                    fail("no echo for the latency probe")
            times.append((time.perf_counter() - t0) * 1000)
            time.sleep(0.01)
        os.write(fd, b"\x15")  # Ctrl-U: forget the probe characters
        times.sort()
        print(f"rtt_ms {times[0]:.3f} {times[len(times) // 2]:.3f} {times[int(len(times) * 0.9)]:.3f}")

    for st in steps:
        kind, _, text = st.partition(":")
        data = text.encode().decode("unicode_escape").encode("latin-1")
        if kind == "send":
            os.write(fd, data)
        elif kind == "expect":
            while True:
                i = out.find(data, seen)
                if i >= 0:
                    seen = i + len(data)
                    break
                if time.monotonic() > deadline:
                    fail(f"timed out waiting for {text!r}")
                if not pump(0.2):
                    fail(f"the client ended before {text!r}")
        elif kind == "rtt":
            probe(int(text))
        elif kind == "sleep":
            # virsh console takes its escape key only as a read of its own
            end = time.monotonic() + float(text)
            while time.monotonic() < end:
                pump(end - time.monotonic())
        else:
            fail(f"unknown step {st!r}")
    # the client must end by itself; the terminal's modes then are what the
    # user's shell gets back (the pty keeps the last ones set)
    while time.monotonic() < deadline and pump(0.2):
        pass
    for _ in range(50):  # it closed the terminal: give it 5 s to be reaped
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.1)
    else:
        fail("the client did not exit after the last step")
    after = termios.tcgetattr(fd)
    if log:
        open(log, "wb").write(out)
    if not os.WIFEXITED(status) or os.WEXITSTATUS(status) != 0:
        fail(f"the client exited with status {status:#x}")
    for name, flag in (("ICANON", termios.ICANON), ("ECHO", termios.ECHO)):
        if (before[3] & flag) != (after[3] & flag):
            fail(f"the terminal was not restored: {name} changed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
