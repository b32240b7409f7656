#!/usr/bin/python3
"""Draws letters on nnpar serve's page in headless Chromium, as a person would with a mouse,
a pen or a finger, and reports what the page then shows. Used by tests/test_serve.cpp
(Browser.*).

    serve_browser.py --chromium /usr/bin/chromium --url http://127.0.0.1:PORT/ --out DIR

The page is driven through the DevTools protocol (python3-websocket): real mouse, pen and
touch events on the canvas, so the page's pointer handling, its PNG upload and its display
are all in the loop. For each letter: draw its strokes, wait until the page's answer is for the
finished drawing, read the shown top-5 and the 28x28 preview, save a screenshot
DIR/serve-browser-X.png, press Clear. Prints one JSON object on stdout; exits non-zero with a
message on failure.
"""
import argparse
import base64
import json
import math
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import websocket

# Strokes in the pad's own pixels (280x280), drawn clearly and large as a person would.
LETTERS = {
    "L": [[(90, 50), (90, 230), (200, 230)]],
    "O": [[(140 + 70 * math.sin(2 * math.pi * t / 48), 140 - 90 * math.cos(2 * math.pi * t / 48))
           for t in range(49)]],
    "T": [[(60, 60), (220, 60)], [(140, 60), (140, 230)]],
}
# The input device per letter: the page must take a pen and a finger as well as a mouse.
DEVICE = {"L": "mouse", "O": "pen", "T": "touch"}


class DevTools:
    def __init__(self, ws_url, timeout):
        self.ws = websocket.create_connection(ws_url, timeout=timeout, suppress_origin=True)
        self.next_id = 0

    def call(self, method, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def evaluate(self, expression):
        r = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"page script failed: {expression}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def wait_for(self, expression, what, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.05)
        raise RuntimeError(f"timed out after {timeout} s waiting for {what}")


def start_chromium(chromium, profile, timeout):
    args = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--no-first-run", "--no-default-browser-check", "--remote-debugging-port=0",
            f"--user-data-dir={profile}", "--window-size=1280,900", "about:blank"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines = queue.Queue()
    threading.Thread(target=lambda: [lines.put(l) for l in proc.stderr], daemon=True).start()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.2)
        except queue.Empty:
            if proc.poll() is not None:
                raise RuntimeError(f"chromium exited with status {proc.returncode} before DevTools started")
            continue
        if line.startswith("DevTools listening on "):
            return proc, line.split()[-1]
    proc.kill()
    raise RuntimeError(f"chromium did not start DevTools within {timeout} s")


def page_target(browser_ws):
    port = browser_ws.split(":")[2].split("/")[0]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:
        targets = json.load(r)
    for t in targets:
        if t.get("type") == "page":
            return t["webSocketDebuggerUrl"]
    raise RuntimeError("chromium has no page target")


def mouse(dt, kind, x, y, buttons, pointer="mouse"):
    dt.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", buttons=buttons, clickCount=1,
            pointerType=pointer)


def touch(dt, kind, points):
    dt.call("Input.dispatchTouchEvent", type=kind, touchPoints=[{"x": x, "y": y} for x, y in points])


def draw(dt, rect, strokes, device):
    sx, sy = rect["width"] / 280.0, rect["height"] / 280.0

    def at(p):
        return rect["left"] + p[0] * sx, rect["top"] + p[1] * sy

    for stroke in strokes:
        x, y = at(stroke[0])
        if device != "touch":
            mouse(dt, "mousePressed", x, y, 1, device)
        else:
            touch(dt, "touchStart", [(x, y)])
        for a, b in zip(stroke, stroke[1:]):
            steps = max(1, int(math.dist(a, b) / 6))
            for i in range(1, steps + 1):
                x, y = at((a[0] + (b[0] - a[0]) * i / steps, a[1] + (b[1] - a[1]) * i / steps))
                if device != "touch":
                    mouse(dt, "mouseMoved", x, y, 1, device)
                else:
                    touch(dt, "touchMove", [(x, y)])
        if device != "touch":
            mouse(dt, "mouseReleased", x, y, 0, device)
        else:
            touch(dt, "touchEnd", [])


def click(dt, selector):
    r = dt.evaluate(f"JSON.stringify(document.querySelector('{selector}').getBoundingClientRect())")
    r = json.loads(r)
    x, y = r["left"] + r["width"] / 2, r["top"] + r["height"] / 2
    mouse(dt, "mousePressed", x, y, 1)
    mouse(dt, "mouseReleased", x, y, 0)


SHOWN = """(() => {
  const top = document.getElementById('top-letter');
  const seen = document.getElementById('seen').getContext('2d').getImageData(0, 0, 28, 28).data;
  let ink = 0;
  for (let i = 0; i < seen.length; i += 4) ink += seen[i];
  return {
    top: top.dataset.letter,
    top_text: top.textContent,
    top5: [...document.querySelectorAll('#top5 li')].map(li => [li.dataset.letter, li.querySelector('.p').textContent]),
    message: document.getElementById('message').textContent,
    pointer: document.getElementById('pad').dataset.pointer,
    seen_ink: ink,
  };
})()"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chromium", required=True)
    ap.add_argument("--url", required=True)
    ap.add_argument("--out", required=True, help="folder for the screenshots")
    ap.add_argument("--letters", default="L,O,T")
    ap.add_argument("--timeout", type=float, default=15, help="seconds for each wait")
    args = ap.parse_args()

    profile = tempfile.mkdtemp(prefix="nnpar-chromium-")
    proc = None
    try:
        proc, browser_ws = start_chromium(args.chromium, profile, args.timeout)
        dt = DevTools(page_target(browser_ws), args.timeout)
        dt.call("Page.enable")
        dt.call("Page.navigate", url=args.url)
        dt.wait_for("document.readyState === 'complete' && typeof window.nnparSettled === 'function' && "
                    "document.getElementById('model-source').textContent.startsWith('model:')",
                    "the page to load and reach the server", args.timeout)
        rect = json.loads(dt.evaluate("JSON.stringify(document.getElementById('pad').getBoundingClientRect())"))
        results = {}
        for letter in args.letters.split(","):
            draw(dt, rect, LETTERS[letter], DEVICE[letter])
            dt.wait_for("window.nnparSettled() && document.getElementById('top-letter').dataset.letter !== ''",
                        f"the page's answer for the drawn {letter}", args.timeout)
            shown = dt.evaluate(SHOWN)
            shot = os.path.join(args.out, f"serve-browser-{letter}.png")
            with open(shot, "wb") as f:
                f.write(base64.b64decode(dt.call("Page.captureScreenshot", format="png")["data"]))
            shown["screenshot"] = shot
            shown["device"] = DEVICE[letter]
            results[letter] = shown
            click(dt, "#clear")
            dt.wait_for("window.nnparSettled() && document.getElementById('top-letter').dataset.letter === ''",
                        "the page to clear", args.timeout)
        print(json.dumps({"letters": results}))
        try:
            dt.call("Browser.close")
        except Exception:  # the browser may close the socket before answering
            pass
    except Exception as e:
        print(f"serve_browser.py: {e}", file=sys.stderr)
        return 1
    finally:
        if proc is not None:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(profile, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
