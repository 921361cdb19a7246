"""qemu guestfwd helper: one guest TCP connection (stdin/stdout) <-> the
metadata service on 127.0.0.1:PORT, leaving from SOURCE (the guest's
"address" as the service sees it).  usage: guestfwd_bridge.py PORT SOURCE"""
import os
import socket
import sys
import threading

s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), source_address=(sys.argv[2], 0))


def up():
    while True:
        d = os.read(0, 65536)
        if not d:
            s.shutdown(socket.SHUT_WR)
            return
        s.sendall(d)


threading.Thread(target=up, daemon=True).start()
while True:
    d = s.recv(65536)
    if not d:
        break
    os.write(1, d)
