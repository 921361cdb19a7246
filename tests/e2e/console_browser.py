#!/usr/bin/python3
"""Open the console page in headless Chromium and type into it, over the
DevTools protocol (CDP) on --remote-debugging-port.

  /usr/bin/python3 console_browser.py URL PROFILE_DIR COMMAND EXPECT [TIMEOUT]

(Debian's python3: its python3-websocket is the CDP client.)

Waits until the page says "connected", presses Enter, waits for a shell
prompt ("# "), types COMMAND and Enter as keystrokes, and waits until EXPECT
appears in the terminal's buffer (xterm.js, read through the page's
window.stratusTerm). Prints the terminal's last lines; exit 1 on a timeout.
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import websocket  # python3-websocket


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Cdp:
    def __init__(self, url):
        self.ws = websocket.create_connection(url, timeout=30)
        self.n = 0

    def call(self, method, **params):
        self.n += 1
        self.ws.send(json.dumps({"id": self.n, "method": method, "params": params}))
        while True:
            m = json.loads(self.ws.recv())
            if m.get("id") == self.n:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m.get("result", {})

    def js(self, expr):
        r = self.call("Runtime.evaluate", expression=expr, returnByValue=True)
        return r.get("result", {}).get("value")

    def key(self, text):
        for ch in text:
            if ch == "\r":
                self.call("Input.dispatchKeyEvent", type="keyDown", key="Enter", code="Enter",
                          windowsVirtualKeyCode=13, text="\r")
                self.call("Input.dispatchKeyEvent", type="keyUp", key="Enter", code="Enter",
                          windowsVirtualKeyCode=13)
            else:
                self.call("Input.dispatchKeyEvent", type="keyDown", text=ch, key=ch)
                self.call("Input.dispatchKeyEvent", type="keyUp", key=ch)


STATUS = "document.getElementById('status') && document.getElementById('status').textContent"
SCREEN = """(function(){var t=window.stratusTerm;if(!t)return '';var b=t.buffer.active,o=[];
for(var i=0;i<b.length;i++){var l=b.getLine(i);if(l)o.push(l.translateToString(true));}
return o.join('\\n');})()"""


def main():
    url, profile, command, expect = sys.argv[1:5]
    timeout = float(sys.argv[5]) if len(sys.argv) > 5 else 60
    chrome = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chrome:
        print("chromium not installed (deps/test-console.txt)")
        return 1
    port = free_port()
    proc = subprocess.Popen([chrome, "--headless=new", "--no-sandbox", "--disable-gpu",
                             "--no-first-run", f"--user-data-dir={profile}",
                             f"--remote-debugging-port={port}", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=open(profile + ".log", "w"))
    try:
        deadline = time.monotonic() + timeout
        target = None
        while not target and time.monotonic() < deadline:
            try:
                pages = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json", timeout=2))
                target = next((p for p in pages if p.get("type") == "page"), None)
            except OSError:
                time.sleep(0.3)
        if not target:
            print("chromium: no DevTools page")
            return 1
        cdp = Cdp(target["webSocketDebuggerUrl"])
        cdp.call("Page.enable")
        cdp.call("Page.navigate", url=url)

        def wait(pred, what):
            while time.monotonic() < deadline:
                v = pred()
                if v:
                    return v
                time.sleep(0.2)
            status = cdp.js(STATUS)
            print(f"timed out waiting for {what}; page status: {status}")
            print(cdp.js(SCREEN) or "")
            sys.exit(1)

        wait(lambda: cdp.js(STATUS) == "connected", "the page to connect")
        cdp.js("window.stratusTerm.focus()")
        cdp.key("\r")
        wait(lambda: "# " in (cdp.js(SCREEN) or ""), "a shell prompt")
        cdp.key(command + "\r")
        screen = wait(lambda: (lambda s: s if expect in s.replace(command, "") else None)(
            cdp.js(SCREEN) or ""), repr(expect))
        print("\n".join([l for l in screen.split("\n") if l.strip()][-5:]))
        return 0
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


if __name__ == "__main__":
    sys.exit(main())
