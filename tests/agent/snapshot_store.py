#!/usr/bin/env python3
"""A misbehaving image store for tests/agent/test_snapshot.sh: PUT, HEAD,
GET, DELETE of files in ROOT, and what it does with an upload is read from
MODEFILE at each PUT: ok, 500 (answers 500 Internal Server Error), truncate
(keeps half of the body, answers 201), corrupt (flips a byte, answers 201).

    snapshot_store.py ROOT PORT MODEFILE
"""
import http.server
import os
import sys

ROOT, PORT, MODEFILE = sys.argv[1], int(sys.argv[2]), sys.argv[3]


def mode():
    try:
        with open(MODEFILE) as f:
            return f.read().strip()
    except OSError:
        return "ok"


class Store(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def path_of(self):
        return os.path.join(ROOT, os.path.basename(self.path))

    def reply(self, code, body=b""):
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)

    def do_PUT(self):
        left = int(self.headers.get("Content-Length", "0"))
        data = bytearray()
        while left > 0:
            chunk = self.rfile.read(min(left, 1 << 20))
            if not chunk:
                break
            data += chunk
            left -= len(chunk)
        m = mode()
        if m == "500":
            self.reply(500, b"store failure\n")
            return
        if m == "truncate":
            data = data[: len(data) // 2]
        elif m == "corrupt" and data:
            data[len(data) // 2] ^= 0x01
        with open(self.path_of(), "wb") as f:
            f.write(data)
        self.reply(201)

    def serve(self, body):
        p = self.path_of()
        if not os.path.isfile(p):
            self.reply(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(os.path.getsize(p)))
        self.end_headers()
        if body:
            with open(p, "rb") as f:
                self.wfile.write(f.read())

    def do_HEAD(self):
        self.serve(False)

    def do_GET(self):
        self.serve(True)

    def do_DELETE(self):
        try:
            os.unlink(self.path_of())
            self.reply(204)
        except FileNotFoundError:
            self.reply(404)

    def log_message(self, fmt, *args):
        sys.stderr.write("store: " + fmt % args + "\n")


http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Store).serve_forever()
