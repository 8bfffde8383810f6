#!/usr/bin/env python3
"""Screenshots the wallboard in headless Chromium once it shows data.

Usage: screenshot.py URL OUT.png [--width 1920] [--height 1080] [--full] [--timeout 60]

--full takes the whole page (its height), not only the first screen.

Chromium is driven over the DevTools protocol on a pipe (--remote-debugging-pipe:
commands into its fd 3, answers out of its fd 4, each message ended by a NUL), as
tests/it/browser.rs does. `--screenshot` alone fires at the load event, before the
page's Server-Sent Events and fetches have arrived, so it showed an empty board.
"""
import argparse
import base64
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

# Data everywhere: the workspace tiles, three sparklines with lines, agents, intervals.
READY = """(() => {
  const q = (s) => document.querySelectorAll(s).length;
  return !document.querySelector('#ws-body.empty') && q('#tr-body polyline') >= 3
    && !document.querySelector('#ag-body .empty') && !document.querySelector('#iv-body .empty');
})()"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("out")
    ap.add_argument("--width", type=int, default=1920)
    ap.add_argument("--height", type=int, default=1080)
    ap.add_argument("--full", action="store_true")
    ap.add_argument("--timeout", type=float, default=60)
    a = ap.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        sys.exit("screenshot.py: no chromium (apt-get install chromium)")

    def high(fd):
        n = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
        os.close(fd)
        return n

    # Move our ends above 10 first, so that placing the child's on 3 and 4 closes none.
    cmd_r, cmd_w = map(high, os.pipe())
    ans_r, ans_w = map(high, os.pipe())
    os.dup2(cmd_r, 3)
    os.dup2(ans_w, 4)
    profile = tempfile.mkdtemp(prefix="trs-shot-")
    proc = subprocess.Popen(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--hide-scrollbars", "--remote-debugging-pipe",
         f"--user-data-dir={profile}", f"--window-size={a.width},{a.height}", "about:blank"],
        pass_fds=(3, 4), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    for fd in (3, 4, cmd_r, ans_w):
        os.close(fd)
    buf = b""
    state = {"id": 0, "session": None}

    def call(method, params=None):
        state["id"] += 1
        msg = {"id": state["id"], "method": method, "params": params or {}}
        if state["session"]:
            msg["sessionId"] = state["session"]
        os.write(cmd_w, json.dumps(msg).encode() + b"\0")
        nonlocal buf
        while True:
            while b"\0" in buf:
                raw, buf = buf.split(b"\0", 1)
                v = json.loads(raw)
                if v.get("id") == state["id"]:
                    if "error" in v:
                        raise RuntimeError(f"{method}: {v['error']}")
                    return v.get("result", {})
            chunk = os.read(ans_r, 1 << 16)
            if not chunk:
                raise RuntimeError("chromium closed the pipe")
            buf += chunk

    try:
        target = call("Target.createTarget", {"url": "about:blank"})["targetId"]
        state["session"] = call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        call("Emulation.setDeviceMetricsOverride",
             {"width": a.width, "height": a.height, "deviceScaleFactor": 1, "mobile": False})
        call("Page.navigate", {"url": a.url})
        deadline = time.time() + a.timeout
        while True:
            r = call("Runtime.evaluate", {"expression": READY, "returnByValue": True})
            if r.get("result", {}).get("value") is True:
                break
            if time.time() > deadline:
                print("screenshot.py: the board did not show all its data in time; taking it anyway",
                      file=sys.stderr)
                break
            time.sleep(0.5)
        time.sleep(2)  # the agents' and intervals' tables fill a moment after
        if a.full:
            r = call("Runtime.evaluate", {"expression": "document.documentElement.scrollHeight",
                                          "returnByValue": True})
            height = max(a.height, int(r.get("result", {}).get("value") or a.height))
            call("Emulation.setDeviceMetricsOverride",
                 {"width": a.width, "height": height, "deviceScaleFactor": 1, "mobile": False})
            time.sleep(1)
        shot = call("Page.captureScreenshot", {"format": "png"})
        with open(a.out, "wb") as f:
            f.write(base64.b64decode(shot["data"]))
    finally:
        state["session"] = None
        try:
            call("Browser.close")
        except Exception:
            pass
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    main()
