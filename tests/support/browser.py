"""Render an HTML page in a real headless Chromium and report what happened.

Standard library only (Python 3.8+). Talks the Chrome DevTools Protocol (CDP)
over a minimal websocket client written here; no selenium/playwright.

Typical use::

    from browser import check_page, count_js, find_chromium

    if find_chromium() is None:
        raise unittest.SkipTest("chromium not installed")
    res = check_page("report.html",
                     evaluate={"points": count_js("svg.chart circle.point")},
                     screenshot_path="report.png")
    assert res.ok, res.errors          # loaded, no console errors/exceptions
    assert res.values["points"] == 7

Several pages in one browser launch (faster)::

    with Browser() as b:
        r1 = b.check("a.html")
        r2 = b.check("b.html")

What counts as an error (PageCheck.errors):
  * uncaught exceptions and unhandled promise rejections (Runtime.exceptionThrown)
  * console.error(...) and failed console.assert(...) (Runtime.consoleAPICalled)
  * browser log entries with level "error" (Log.entryAdded), e.g. failed
    resource loads, including requests blocked because they leave the machine
  * the load event not firing within ``load_timeout``
  * a JS expression from ``evaluate`` that throws

By default every http(s)/ws(s)/ftp request is blocked (``block_network=True``),
so a page that references external assets fails fast instead of hanging: each
blocked request becomes an error "network: blocked external request URL ..."
and the URL is listed in PageCheck.external_requests. With
block_network=False the browser really tries; on a closed network that gives
"log[network]: Failed to load resource: net::ERR_NAME_NOT_RESOLVED (URL)".
"""

import atexit
import base64
import ctypes
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

__all__ = [
    "BrowserError",
    "ChromiumNotFound",
    "PageCheck",
    "Browser",
    "check_page",
    "count_js",
    "find_chromium",
]

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# Debian's /usr/bin/chromium is a shell wrapper that adds extension/GPU flags and
# (with a large /dev/shm) prints a harmless "[: unexpected operator"; the real
# binary lives here and is what we actually start when it exists.
DEBIAN_REAL_BINARY = "/usr/lib/chromium/chromium"

CHROME_FLAGS = [
    "--headless",
    "--no-sandbox",  # we run as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--disable-breakpad",
    "--disable-crash-reporter",
    "--disable-dev-shm-usage",  # containers often have a tiny /dev/shm
    "--disable-features=Translate,MediaRouter,OptimizationHints,AutofillServerCommunication",
    "--metrics-recording-only",
    "--password-store=basic",
    "--use-mock-keychain",
    "--mute-audio",
    "--hide-scrollbars",
    "--remote-debugging-port=0",
]

LOCAL_SCHEMES = ("file", "data", "blob", "about", "chrome", "devtools")
BLOCKED_PATTERNS = ["http://*", "https://*", "ws://*", "wss://*", "ftp://*"]


class BrowserError(RuntimeError):
    """The browser could not be started or stopped talking to us."""


class ChromiumNotFound(BrowserError):
    """No Chromium/Chrome executable was found (tests should skip)."""


# --------------------------------------------------------------------------
# locating chromium
# --------------------------------------------------------------------------

def find_chromium():
    """Path of a Chromium/Chrome executable, or None.

    Order: $CHROMIUM, then chromium, chromium-browser, google-chrome,
    google-chrome-stable on $PATH, then /usr/lib/chromium/chromium.
    """
    env = os.environ.get("CHROMIUM")
    if env:
        found = shutil.which(env)
        return found if found else None
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    if os.access(DEBIAN_REAL_BINARY, os.X_OK):
        return DEBIAN_REAL_BINARY
    return None


def _real_binary(path):
    """Skip Debian's shell wrapper when the real binary is next to it."""
    try:
        with open(path, "rb") as f:
            is_script = f.read(2) == b"#!"
    except OSError:
        return path
    if is_script and os.access(DEBIAN_REAL_BINARY, os.X_OK):
        return DEBIAN_REAL_BINARY
    return path


# --------------------------------------------------------------------------
# minimal websocket client (RFC 6455, client side)
# --------------------------------------------------------------------------

class WebSocket:
    GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

    def __init__(self, url, timeout=10.0):
        u = urlparse(url)
        if u.scheme != "ws":
            raise BrowserError("only ws:// urls are supported: %r" % url)
        self.sock = socket.create_connection((u.hostname, u.port or 80), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        key = base64.b64encode(os.urandom(16))
        path = u.path + ("?" + u.query if u.query else "")
        host = "%s:%s" % (u.hostname, u.port or 80)
        req = (
            "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n"
            % (path, host, key.decode())
        )
        self.sock.sendall(req.encode())
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.buf:
            self._fill(deadline)
        head, _, rest = bytes(self.buf).partition(b"\r\n\r\n")
        self.buf = bytearray(rest)
        lines = head.decode("latin-1").split("\r\n")
        if not re.match(r"HTTP/1\.1 101\b", lines[0]):
            raise BrowserError("websocket handshake refused: %s" % lines[0])
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        expect = base64.b64encode(hashlib.sha1(key + self.GUID).digest()).decode()
        if headers.get("sec-websocket-accept") != expect:
            raise BrowserError("bad Sec-WebSocket-Accept in handshake")

    def _fill(self, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("websocket read timed out")
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(1 << 20)
        except socket.timeout:
            raise TimeoutError("websocket read timed out")
        if not chunk:
            raise BrowserError("websocket closed by browser")
        self.buf += chunk

    def _read_exact(self, n, deadline):
        while len(self.buf) < n:
            self._fill(deadline)
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    def _send_frame(self, opcode, payload):
        header = bytearray([0x80 | opcode])
        n = len(payload)
        if n < 126:
            header.append(0x80 | n)
        elif n < 1 << 16:
            header.append(0x80 | 126)
            header += struct.pack("!H", n)
        else:
            header.append(0x80 | 127)
            header += struct.pack("!Q", n)
        mask = os.urandom(4)
        header += mask
        self.sock.settimeout(10)
        self.sock.sendall(bytes(header) + _mask(payload, mask))

    def send_text(self, text):
        self._send_frame(0x1, text.encode("utf-8"))

    def recv_text(self, deadline):
        """Next complete text (or binary) message; handles fragments and pings."""
        parts = []
        msg_opcode = None
        while True:
            b0, b1 = self._read_exact(2, deadline)
            fin, opcode = b0 & 0x80, b0 & 0x0F
            masked, n = b1 & 0x80, b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", self._read_exact(2, deadline))[0]
            elif n == 127:
                n = struct.unpack("!Q", self._read_exact(8, deadline))[0]
            mask = self._read_exact(4, deadline) if masked else None
            payload = self._read_exact(n, deadline)
            if mask:
                payload = _mask(payload, mask)
            if opcode == 0x9:  # ping
                self._send_frame(0xA, payload)
                continue
            if opcode == 0xA:  # pong
                continue
            if opcode == 0x8:  # close
                try:
                    self._send_frame(0x8, payload[:2])
                except OSError:
                    pass
                raise BrowserError("websocket closed by browser")
            if opcode in (0x1, 0x2):
                msg_opcode = opcode
                parts = [payload]
            elif opcode == 0x0:
                parts.append(payload)
            if fin and msg_opcode is not None:
                return b"".join(parts).decode("utf-8", "replace")

    def close(self):
        try:
            self._send_frame(0x8, struct.pack("!H", 1000))
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:
            pass


def _mask(data, mask):
    if not data:
        return b""
    # XOR via big ints: fast enough for multi-MB payloads without numpy.
    n = len(data)
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")


# --------------------------------------------------------------------------
# CDP connection (single-threaded: events are queued while waiting for replies)
# --------------------------------------------------------------------------

class CDPError(BrowserError):
    pass


class CDP:
    def __init__(self, ws_url, timeout=10.0):
        self.ws = WebSocket(ws_url, timeout=timeout)
        self.next_id = 0
        self.events = []  # (sessionId, method, params) not yet consumed
        self.on_event = None  # optional callback(session, method, params)

    def _dispatch(self, msg):
        if self.on_event:
            self.on_event(msg.get("sessionId"), msg["method"], msg.get("params", {}))
        self.events.append((msg.get("sessionId"), msg["method"], msg.get("params", {})))

    def send(self, method, params=None, session=None, timeout=10.0, wait=True):
        self.next_id += 1
        mid = self.next_id
        msg = {"id": mid, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        self.ws.send_text(json.dumps(msg))
        if not wait:
            return None
        deadline = time.monotonic() + timeout
        while True:
            try:
                data = json.loads(self.ws.recv_text(deadline))
            except TimeoutError:
                raise TimeoutError("no reply to %s within %.1fs" % (method, timeout))
            if "method" in data:
                self._dispatch(data)
            elif data.get("id") == mid:
                if "error" in data:
                    raise CDPError("%s failed: %s" % (method, data["error"].get("message")))
                return data.get("result", {})

    def pump(self, deadline):
        """Read one message (queueing events). Returns False on timeout."""
        try:
            data = json.loads(self.ws.recv_text(deadline))
        except TimeoutError:
            return False
        if "method" in data:
            self._dispatch(data)
        return True

    def wait_for(self, predicate, deadline, start=0):
        """Wait until an event satisfying predicate(session, method, params) arrived
        (looking at queued events from index `start` on)."""
        idx = start
        while True:
            while idx < len(self.events):
                if predicate(*self.events[idx]):
                    return self.events[idx]
                idx += 1
            if time.monotonic() >= deadline or not self.pump(deadline):
                return None

    def close(self):
        self.ws.close()


# --------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------

class PageCheck:
    """Outcome of rendering one page."""

    def __init__(self, url):
        self.url = url
        self.errors = []             # human-readable error lines (see module doc)
        self.console = []            # every console message: (type, text)
        self.external_requests = []  # non-local URLs the page tried to load
        self.values = {}             # name -> JSON value of each `evaluate` expression
        self.screenshot = None       # PNG bytes or None
        self.loaded = False          # load event fired within load_timeout
        self.load_seconds = None     # navigate -> load event
        self.seconds = None          # whole check (excluding browser start when reused)

    @property
    def ok(self):
        return self.loaded and not self.errors

    def summary(self):
        return "%s: %s, %d error(s), %d external request(s), load %.2fs" % (
            self.url,
            "ok" if self.ok else "FAILED",
            len(self.errors),
            len(self.external_requests),
            self.load_seconds if self.load_seconds is not None else -1,
        )

    def __repr__(self):
        return "PageCheck(%s errors=%r values=%r)" % (self.url, self.errors, self.values)


def count_js(selector):
    """JS expression counting elements that match a CSS selector."""
    return "document.querySelectorAll(%s).length" % json.dumps(selector)


def _remote_object_text(obj):
    if "value" in obj:
        v = obj["value"]
        return v if isinstance(v, str) else json.dumps(v)
    if obj.get("unserializableValue"):
        return obj["unserializableValue"]
    return obj.get("description") or obj.get("type", "?")


def _where(url, line, col):
    if not url:
        return ""
    return " (%s:%s:%s)" % (os.path.basename(urlparse(url).path) or url, (line or 0) + 1, (col or 0) + 1)


# --------------------------------------------------------------------------
# browser
# --------------------------------------------------------------------------

def _set_pdeathsig():
    """Child side: die with the Python process (Linux only, best effort)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


_LIVE = set()  # browsers still running; closed at interpreter exit as a safety net


@atexit.register
def _close_all():
    for b in list(_LIVE):
        b.close()


class Browser:
    """One headless Chromium process. Use as a context manager."""

    def __init__(self, executable=None, start_timeout=20.0, extra_flags=()):
        exe = executable or find_chromium()
        if not exe:
            raise ChromiumNotFound(
                "chromium not found (apt-get install -y chromium, or set $CHROMIUM)")
        self.executable = _real_binary(exe)
        self.start_timeout = start_timeout
        self.extra_flags = list(extra_flags)
        self.proc = None
        self.cdp = None
        self.profile = None
        self.ws_url = None

    # -- lifecycle --------------------------------------------------------
    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.close()

    def start(self):
        self.profile = tempfile.mkdtemp(prefix="autotune-chromium-")
        _LIVE.add(self)
        log_path = os.path.join(self.profile, "stderr.log")
        args = [self.executable] + CHROME_FLAGS + self.extra_flags + [
            "--user-data-dir=" + os.path.join(self.profile, "profile"),
            "about:blank",
        ]
        env = dict(os.environ)
        env.setdefault("HOME", self.profile)
        try:
            with open(log_path, "wb") as log:
                kwargs = dict(stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                              start_new_session=True, env=env)
                if sys.platform.startswith("linux"):
                    kwargs["preexec_fn"] = _set_pdeathsig
                self.proc = subprocess.Popen(args, **kwargs)
            deadline = time.monotonic() + self.start_timeout
            while True:
                with open(log_path, "rb") as f:
                    text = f.read().decode("utf-8", "replace")
                m = re.search(r"DevTools listening on (ws://\S+)", text)
                if m:
                    self.ws_url = m.group(1)
                    break
                if self.proc.poll() is not None:
                    raise BrowserError("chromium exited with %s before DevTools was ready:\n%s"
                                       % (self.proc.returncode, text[-2000:]))
                if time.monotonic() > deadline:
                    raise BrowserError("chromium did not open DevTools within %.0fs:\n%s"
                                       % (self.start_timeout, text[-2000:]))
                time.sleep(0.05)
            self.cdp = CDP(self.ws_url, timeout=max(1.0, deadline - time.monotonic()))
        except BaseException:
            self.close()
            raise

    def close(self):
        _LIVE.discard(self)
        if self.cdp is not None:
            try:
                self.cdp.close()
            except Exception:
                pass
            self.cdp = None
        if self.proc is not None:
            for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 5.0)):
                try:
                    os.killpg(self.proc.pid, sig)
                except (ProcessLookupError, PermissionError):
                    pass
                try:
                    self.proc.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
            # children (zygote, renderers) share the group; make sure they are gone
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            self.proc = None
        if self.profile is not None:
            for _ in range(3):
                shutil.rmtree(self.profile, ignore_errors=True)
                if not os.path.exists(self.profile):
                    break
                time.sleep(0.2)
            self.profile = None

    # -- one page ---------------------------------------------------------
    def check(self, html_path, *, evaluate=None, screenshot_path=None, screenshot=None,
              width=1200, height=900, full_page=False, timeout=30.0, load_timeout=None,
              settle=0.2, block_network=True):
        """Load html_path (a file path or a URL) in a fresh tab; see check_page."""
        if self.cdp is None:
            raise BrowserError("browser is not running")
        t0 = time.monotonic()
        deadline = t0 + timeout
        if load_timeout is None:
            load_timeout = max(1.0, min(15.0, timeout / 2))
        if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", str(html_path)) and not os.path.exists(str(html_path)):
            url = str(html_path)
        else:
            p = Path(html_path).resolve()
            if not p.is_file():
                raise FileNotFoundError(str(p))
            url = p.as_uri()
        res = PageCheck(url)
        cdp = self.cdp

        def left():
            r = deadline - time.monotonic()
            if r <= 0:
                raise TimeoutError("page check exceeded %.0fs" % timeout)
            return r

        target = cdp.send("Target.createTarget", {"url": "about:blank"}, timeout=left())["targetId"]
        session = None
        try:
            session = cdp.send("Target.attachToTarget", {"targetId": target, "flatten": True},
                               timeout=left())["sessionId"]
            seen_requests = set()
            request_urls = {}

            def on_event(sid, method, params):
                if sid != session:
                    return
                if method == "Runtime.exceptionThrown":
                    d = params.get("exceptionDetails", {})
                    exc = d.get("exception") or {}
                    msg = exc.get("description") or d.get("text", "exception")
                    if exc.get("description") and d.get("text") and d["text"] not in ("Uncaught",):
                        msg = "%s %s" % (d["text"], msg)
                    first = msg.splitlines()[0] if msg else "exception"
                    res.errors.append("exception: %s%s" % (first, _where(
                        d.get("url"), d.get("lineNumber"), d.get("columnNumber"))))
                elif method == "Runtime.consoleAPICalled":
                    kind = params.get("type")
                    text = " ".join(_remote_object_text(a) for a in params.get("args", []))
                    res.console.append((kind, text))
                    if kind in ("error", "assert"):
                        frames = (params.get("stackTrace") or {}).get("callFrames") or [{}]
                        f = frames[0]
                        res.errors.append("console.%s: %s%s" % (kind, text, _where(
                            f.get("url"), f.get("lineNumber"), f.get("columnNumber"))))
                elif method == "Log.entryAdded":
                    e = params.get("entry", {})
                    if e.get("level") == "error":
                        where = " (%s)" % e["url"] if e.get("url") else ""
                        res.errors.append("log[%s]: %s%s" % (e.get("source"), e.get("text"), where))
                elif method == "Network.requestWillBeSent":
                    u = params.get("request", {}).get("url", "")
                    request_urls[params.get("requestId")] = u
                    scheme = urlparse(u).scheme.lower()
                    if scheme not in LOCAL_SCHEMES and u not in seen_requests:
                        seen_requests.add(u)
                        res.external_requests.append(u)
                elif method == "Network.loadingFailed" and params.get("blockedReason"):
                    # blocked requests produce no Log entry; report them ourselves
                    u = request_urls.get(params.get("requestId"), "?")
                    res.errors.append("network: blocked external request %s (%s)"
                                      % (u, params.get("errorText") or "blocked: " + params["blockedReason"]))

            cdp.on_event = on_event
            for method in ("Page.enable", "Runtime.enable", "Log.enable", "Network.enable"):
                cdp.send(method, session=session, timeout=left())
            if block_network:
                try:
                    cdp.send("Network.setBlockedURLs", {"urls": BLOCKED_PATTERNS},
                             session=session, timeout=left())
                except CDPError:
                    cdp.send("Network.setBlockedURLs",
                             {"urlPatterns": [{"urlPattern": u, "block": True}
                                              for u in BLOCKED_PATTERNS]},
                             session=session, timeout=left())
            cdp.send("Emulation.setDeviceMetricsOverride",
                     {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
                     session=session, timeout=left())

            self._load_and_collect(res, session, url, evaluate, screenshot_path, screenshot,
                                   width, height, full_page, deadline, load_timeout, settle,
                                   left)
        except TimeoutError as e:
            # a page that hangs (busy loop, endless load) is a failed check, not a crash
            res.errors.append("timeout: %s" % e)
        finally:
            cdp.on_event = None
            cdp.events.clear()
            try:
                cdp.send("Target.closeTarget", {"targetId": target}, timeout=5.0)
            except Exception:
                pass
            cdp.events.clear()
        res.seconds = time.monotonic() - t0
        return res

    def _load_and_collect(self, res, session, url, evaluate, screenshot_path, screenshot,
                          width, height, full_page, deadline, load_timeout, settle, left):
        cdp = self.cdp
        mark = len(cdp.events)
        nav_start = time.monotonic()
        nav = cdp.send("Page.navigate", {"url": url}, session=session, timeout=left())
        if nav.get("errorText"):
            res.errors.append("navigation failed: %s" % nav["errorText"])
        else:
            load_deadline = min(deadline, nav_start + load_timeout)
            ev = cdp.wait_for(
                lambda sid, m, p: sid == session and m == "Page.loadEventFired",
                load_deadline, start=mark)
            if ev is None:
                res.errors.append("page load event did not fire within %.1fs" % load_timeout)
            else:
                res.loaded = True
                res.load_seconds = time.monotonic() - nav_start
            # let rendering settle: two animation frames, then a short pause
            # during which late errors (timers after load) are still collected
            try:
                cdp.send("Runtime.evaluate", {
                    "expression": "new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))",
                    "awaitPromise": True}, session=session, timeout=min(5.0, left()))
            except (TimeoutError, CDPError):
                pass
            if settle > 0:
                cdp.wait_for(lambda *a: False, min(deadline, time.monotonic() + settle))

        for name, expr in (evaluate or {}).items():
            r = cdp.send("Runtime.evaluate", {"expression": expr, "returnByValue": True,
                                              "awaitPromise": True},
                         session=session, timeout=left())
            if r.get("exceptionDetails"):
                d = r["exceptionDetails"]
                desc = (d.get("exception") or {}).get("description") or d.get("text")
                res.errors.append("evaluate[%s]: %s" % (name, (desc or "").splitlines()[0]))
                res.values[name] = None
            else:
                res.values[name] = r.get("result", {}).get("value")

        if screenshot_path is not None or screenshot:
            params = {"format": "png"}
            if full_page:
                m = cdp.send("Page.getLayoutMetrics", session=session, timeout=left())
                size = m.get("cssContentSize") or m.get("contentSize")
                params["clip"] = {"x": 0, "y": 0, "scale": 1,
                                  "width": max(width, size["width"]),
                                  "height": max(height, size["height"])}
                params["captureBeyondViewport"] = True
            shot = cdp.send("Page.captureScreenshot", params, session=session, timeout=left())
            res.screenshot = base64.b64decode(shot["data"])
            if screenshot_path is not None:
                Path(screenshot_path).parent.mkdir(parents=True, exist_ok=True)
                Path(screenshot_path).write_bytes(res.screenshot)


def check_page(html_path, *, evaluate=None, screenshot_path=None, width=1200, height=900,
               full_page=False, timeout=30.0, load_timeout=None, settle=0.2,
               block_network=True, executable=None):
    """Start Chromium, load html_path, collect errors/values/screenshot, stop Chromium.

    evaluate:        {name: JS expression}; results (JSON values) in PageCheck.values.
                     Promises are awaited. count_js(selector) builds a counting expression.
    screenshot_path: write a PNG there (also kept in PageCheck.screenshot).
    width/height:    viewport in CSS px (device scale 1); full_page captures the whole
                     document height instead of just the viewport.
    timeout:         hard limit for the page work (browser start has its own 20s limit);
                     load_timeout (default min(15, timeout/2)) bounds waiting for `load`.
    settle:          seconds to keep listening for errors after load.
    block_network:   block http(s)/ws(s)/ftp requests (each one becomes an error).
    Raises ChromiumNotFound if no browser, BrowserError/TimeoutError on protocol trouble.
    The browser process group and its temp profile are always removed.
    """
    t0 = time.monotonic()
    with Browser(executable=executable) as b:
        res = b.check(html_path, evaluate=evaluate, screenshot_path=screenshot_path,
                      width=width, height=height, full_page=full_page, timeout=timeout,
                      load_timeout=load_timeout, settle=settle, block_network=block_network)
    res.seconds = time.monotonic() - t0
    return res


if __name__ == "__main__":  # python3 browser.py PAGE.html [SELECTOR] [SHOT.png]
    if len(sys.argv) < 2:
        sys.exit("usage: browser.py PAGE.html [CSS-SELECTOR] [SCREENSHOT.png]")
    _ev = {"count": count_js(sys.argv[2])} if len(sys.argv) > 2 else {}
    _r = check_page(sys.argv[1], evaluate=_ev,
                    screenshot_path=sys.argv[3] if len(sys.argv) > 3 else None)
    print(json.dumps({"ok": _r.ok, "errors": _r.errors, "values": _r.values,
                      "external_requests": _r.external_requests, "console": _r.console,
                      "load_seconds": _r.load_seconds, "seconds": _r.seconds}, indent=2))
    sys.exit(0 if _r.ok else 1)
