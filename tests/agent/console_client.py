#!/usr/bin/env python3
"""A small client of the agent's console proxy, for the tests.

  console_client.py raw ADDR UUID TOKEN           prints the proxy's answer line
  console_client.py ws ADDR UUID TOKEN            prints the HTTP status line (and body)
  console_client.py http ADDR REQUEST-TEXT        sends the text (\\r\\n escapes), prints
                                                  the status line and body
  console_client.py wsframes ADDR UUID TOKEN HEX  after the upgrade, sends HEX bytes and
                                                  prints the close code the proxy answers
  console_client.py batch ADDR                    one of the above per stdin line (without
                                                  ADDR; fields split at tabs), each answer
                                                  after a line "== N"
"""
import base64
import os
import socket
import struct
import sys


def connect(addr):
    host, port = addr.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=10)
    return s


def read_all(s, limit=1 << 20):
    out = b""
    while len(out) < limit:
        try:
            b = s.recv(65536)
        except socket.timeout:
            break
        if not b:
            break
        out += b
    return out


def upgrade(s, addr, uuid, token):
    key = base64.b64encode(os.urandom(16)).decode()
    req = (f"GET /ws?instance={uuid}&token={token} HTTP/1.1\r\nHost: {addr}\r\n"
           f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
           f"Sec-WebSocket-Version: 13\r\n\r\n")
    s.sendall(req.encode())
    head = b""
    while b"\r\n\r\n" not in head:
        b = s.recv(1)
        if not b:
            break
        head += b
    return head.decode(errors="replace")


def main():
    if sys.argv[1] == "batch":
        addr = sys.argv[2]
        for n, line in enumerate(sys.stdin.read().splitlines()):
            print(f"== {n + 1}", flush=True)
            f = line.split("\t")
            one([sys.argv[0], f[0], addr] + f[1:])
            sys.stdout.flush()
        return 0
    return one(sys.argv)


def one(argv):
    mode, addr = argv[1], argv[2]
    s = connect(addr)
    if mode == "raw":
        s.sendall(f"CONSOLE {argv[3]} {argv[4]}\n".encode())
        line = b""
        while not line.endswith(b"\n"):
            b = s.recv(1)
            if not b:
                break
            line += b
        print(line.decode(errors="replace").rstrip("\n"))
    elif mode == "ws":
        head = upgrade(s, addr, argv[3], argv[4])
        print(head.split("\r\n")[0])
        if not head.startswith("HTTP/1.1 101"):
            print(read_all(s).decode(errors="replace").strip())
    elif mode == "http":
        s.sendall(argv[3].encode().decode("unicode_escape").encode("latin-1"))
        resp = read_all(s).decode(errors="replace")
        head, _, body = resp.partition("\r\n\r\n")
        print(head.split("\r\n")[0])
        print(body.strip()[:400])
    elif mode == "wsframes":
        head = upgrade(s, addr, argv[3], argv[4])
        if not head.startswith("HTTP/1.1 101"):
            print(head.split("\r\n")[0])
            return 1
        s.sendall(bytes.fromhex(argv[5]))
        data = read_all(s)
        # the frames back: find the close frame
        i = 0
        while i + 2 <= len(data):
            op, ln = data[i] & 0x0F, data[i + 1] & 0x7F
            hl = 2
            if ln == 126:
                ln, hl = struct.unpack(">H", data[i + 2:i + 4])[0], 4
            elif ln == 127:
                ln, hl = struct.unpack(">Q", data[i + 2:i + 10])[0], 10
            payload = data[i + hl:i + hl + ln]
            if op == 0x8:
                print("close", struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else "")
                return 0
            if op == 0xA:
                print("pong", payload.decode(errors="replace"))
            i += hl + ln
        print("no close frame")
    return 0


if __name__ == "__main__":
    sys.exit(main())
