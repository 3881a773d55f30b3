"""A scripted stand-in for the Anthropic Messages API, on loopback, for end-to-end
tests that drive the real ``claude`` CLI (Python standard library only, 3.8+).

Point the CLI at it with ``ANTHROPIC_BASE_URL=<fake.base_url>`` and any dummy
``ANTHROPIC_API_KEY`` (see ``claude_cli.py`` beside this file). The fake answers
the CLI's *conversation* requests from a SCRIPT, one step per request, and answers
everything else (side queries, token counting, probes) without consuming a step.

    from support.fake_anthropic import FakeAnthropic, text, tool_use, tool_uses

    script = [
        tool_use("Bash", {"command": "echo hi", "description": "say hi"}),
        lambda req: text("saw: " + req.last_tool_result_text()),
        "All done.",                      # a bare string is a text turn
    ]
    with FakeAnthropic(script) as fake:
        ...run claude -p with ANTHROPIC_BASE_URL=fake.base_url...
        conv = fake.conversation            # list[Request], the scripted ones
        assert "Stop hook feedback" in fake.all_user_text()

Script steps (each consumed by one conversation request, in order):
    * ``Turn`` objects from ``text(...)``, ``tool_use(...)``, ``tool_uses(...)``,
      ``turn(text=..., tools=[...])`` or ``api_error(...)``;
    * a ``str``: a text reply with stop_reason ``end_turn``;
    * a ``dict`` ``{"tool": NAME, "input": {...}}`` or a ``list`` of such dicts
      (several tool_use blocks in one reply);
    * a callable ``f(request) -> step`` (any of the above, or ``None`` for the
      default text). It runs on the server thread when the request arrives, so it
      can look at ``request.last_tool_results()`` etc.
When the script is exhausted, every further conversation request gets ``text("done")``.

Which requests are "conversation" requests: POST /v1/messages (any query string,
2.1.197 always sends ``?beta=true``) whose body carries a non-empty ``tools`` list
(``default_is_conversation``). That covers the main loop and sub-agents launched
by the Agent tool (``Request.is_subagent``), which consume steps in the order the
CLI makes the calls. Override with ``FakeAnthropic(..., is_conversation=callable)``.
Everything else on /v1/messages (e.g. the TUI's session-title query: haiku,
``tools: []``, structured output ``{"title": str}``) is a "side" request answered
by ``side_reply`` (default "ok"; when the request asks for a JSON schema the
string is wrapped into a minimal valid JSON object), streamed or not as asked.
``/v1/messages/count_tokens`` gets ``{"input_tokens": N}``; GET/HEAD probes
(2.1.197 sends ``HEAD /`` at start-up) get 200 ``{}``; other POST paths get 404.

Every request is recorded (``fake.requests``: ``Request`` objects with method, path,
query, headers, raw body, parsed JSON ``body``, ``kind`` and, for scripted ones,
``step`` and the ``reply`` sent). Set ``log_path`` to also append one JSON line per
request to a file, which helps when a CLI run goes wrong.
"""

import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from socketserver import ThreadingMixIn
from urllib.parse import parse_qs, urlsplit

__all__ = [
    "DEFAULT_MODEL",
    "FakeAnthropic",
    "Request",
    "Turn",
    "ToolCall",
    "text",
    "tool_use",
    "tool_uses",
    "turn",
    "api_error",
    "default_is_conversation",
    "content_text",
]

DEFAULT_MODEL = "claude-opus-4-8"


# --------------------------------------------------------------------------- script


class ToolCall(object):
    """One tool_use block: tool name, input dict, optional fixed id."""

    __slots__ = ("name", "input", "id")

    def __init__(self, name, input=None, id=None):
        self.name = name
        self.input = dict(input or {})
        self.id = id

    def __repr__(self):
        return "ToolCall(%r, %r)" % (self.name, self.input)


class Turn(object):
    """One scripted assistant reply.

    ``text``: optional leading text block; ``tools``: list of ToolCall (tool_use
    blocks after the text); ``stop_reason`` defaults to ``tool_use`` when there are
    tools, else ``end_turn``. ``error`` = (http_status, error_type, message) makes
    the fake answer with an API error instead (beware: the CLI retries 5xx/429/529
    with back-off, each retry consuming the next step).
    """

    __slots__ = ("text", "tools", "stop_reason", "error")

    def __init__(self, text=None, tools=None, stop_reason=None, error=None):
        self.text = text
        self.tools = list(tools or [])
        self.stop_reason = stop_reason or ("tool_use" if self.tools else "end_turn")
        self.error = error

    def __repr__(self):
        if self.error:
            return "Turn(error=%r)" % (self.error,)
        return "Turn(text=%r, tools=%r, stop_reason=%r)" % (self.text, self.tools, self.stop_reason)


def text(s, stop_reason="end_turn"):
    """A plain text reply (default stop_reason end_turn)."""
    return Turn(text=s, stop_reason=stop_reason)


def tool_use(name, input=None, text=None, id=None):
    """A reply with one tool_use block (optionally preceded by a text block)."""
    return Turn(text=text, tools=[ToolCall(name, input, id)])


def tool_uses(*calls, **kw):
    """A reply with several tool_use blocks: ``tool_uses(("Bash", {...}), ("Read", {...}))``.

    Each call may be a ToolCall, a ``(name, input)`` pair or a ``{"tool":, "input":}`` dict.
    Keyword ``text=`` adds a leading text block.
    """
    return Turn(text=kw.get("text"), tools=[_as_call(c) for c in calls])


def turn(text=None, tools=(), stop_reason=None):
    """General form: ``turn(text="Let me look", tools=[("Read", {"file_path": p})])``."""
    return Turn(text=text, tools=[_as_call(c) for c in tools], stop_reason=stop_reason)


def api_error(status=500, error_type="api_error", message="scripted error"):
    """Answer one conversation request with an HTTP error (the CLI may retry)."""
    return Turn(error=(int(status), error_type, message))


def _as_call(c):
    if isinstance(c, ToolCall):
        return c
    if isinstance(c, dict):
        return ToolCall(c.get("tool") or c.get("name"), c.get("input"), c.get("id"))
    name, inp = c[0], (c[1] if len(c) > 1 else {})
    return ToolCall(name, inp)


def _coerce_step(step, default_text):
    if step is None:
        return Turn(text=default_text)
    if isinstance(step, Turn):
        return step
    if isinstance(step, ToolCall):
        return Turn(tools=[step])
    if isinstance(step, str):
        return Turn(text=step)
    if isinstance(step, dict):
        return Turn(tools=[_as_call(step)])
    if isinstance(step, (list, tuple)):
        return Turn(tools=[_as_call(c) for c in step])
    raise TypeError("unsupported script step: %r" % (step,))


# --------------------------------------------------------------------------- recorded requests


def content_text(content):
    """Flatten a message ``content`` (str or list of blocks) to text.

    Text blocks give their text; tool_result blocks give their (flattened) content.
    """
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    out = []
    for block in content:
        if not isinstance(block, dict):
            continue
        t = block.get("type")
        if t == "text":
            out.append(block.get("text", ""))
        elif t == "tool_result":
            out.append(content_text(block.get("content")))
    return "\n".join(out)


class Request(object):
    """One HTTP request the fake received.

    Attributes: ``method``, ``path`` (no query), ``query`` (dict of lists),
    ``headers`` (dict, lower-case keys), ``raw`` (bytes), ``body`` (parsed JSON or
    None), ``kind`` ("conversation", "side", "count_tokens", "other"), ``step``
    (index into the script for conversation requests, or None; steps past the end
    of the script are numbered on), ``reply`` (the Turn answered, for
    conversation/side messages), ``time`` (time.time()).
    """

    def __init__(self, method, path, query, headers, raw):
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.raw = raw
        self.body = None
        if raw:
            try:
                self.body = json.loads(raw.decode("utf-8"))
            except ValueError:
                self.body = None
        self.kind = "other"
        self.step = None
        self.reply = None
        self.time = time.time()

    # -- body helpers (safe on any request; return empty values when absent)
    @property
    def messages(self):
        if not isinstance(self.body, dict):
            return []
        return [m for m in (self.body.get("messages") or []) if isinstance(m, dict)]

    @property
    def model(self):
        return (self.body or {}).get("model") if isinstance(self.body, dict) else None

    @property
    def stream(self):
        return bool(isinstance(self.body, dict) and self.body.get("stream"))

    @property
    def tool_names(self):
        tools = (self.body or {}).get("tools") if isinstance(self.body, dict) else None
        return [t.get("name") for t in (tools or []) if isinstance(t, dict)]

    @property
    def is_subagent(self):
        """True for requests made by a sub-agent (Agent/Task tool): 2.1.197 marks them
        with ``cc_is_subagent=`` in the billing-header block of ``system``."""
        return "cc_is_subagent=" in self.system_text

    @property
    def system_text(self):
        """The ``system`` field flattened to one string (str or list of text blocks)."""
        system = (self.body or {}).get("system") if isinstance(self.body, dict) else None
        return content_text(system)

    def tool_results(self):
        """All tool_result blocks in the request, oldest first.

        Each is the raw block dict: ``{"type":"tool_result","tool_use_id":..,
        "content": str-or-blocks, "is_error": bool?}`` plus ``"text"`` (flattened
        content) added for convenience.
        """
        out = []
        for msg in self.messages:
            content = msg.get("content")
            if msg.get("role") != "user" or not isinstance(content, list):
                continue
            for block in content:
                if isinstance(block, dict) and block.get("type") == "tool_result":
                    b = dict(block)
                    b["text"] = content_text(block.get("content"))
                    out.append(b)
        return out

    def last_tool_results(self):
        """tool_result blocks of the last user message only (the results of the
        previous reply's tool calls)."""
        msgs = self.messages
        if not msgs or msgs[-1].get("role") != "user":
            return []
        content = msgs[-1].get("content")
        if not isinstance(content, list):
            return []
        out = []
        for block in content:
            if isinstance(block, dict) and block.get("type") == "tool_result":
                b = dict(block)
                b["text"] = content_text(block.get("content"))
                out.append(b)
        return out

    def last_tool_result_text(self):
        res = self.last_tool_results()
        return res[-1]["text"] if res else ""

    def user_texts(self):
        """Text of every text block (or string content) of every user message, in
        order (tool_result contents excluded)."""
        out = []
        for msg in self.messages:
            if msg.get("role") != "user":
                continue
            content = msg.get("content")
            if isinstance(content, str):
                out.append(content)
            elif isinstance(content, list):
                for block in content:
                    if isinstance(block, dict) and block.get("type") == "text":
                        out.append(block.get("text", ""))
        return out

    def last_user_text(self):
        """Text blocks of the last user message joined by newlines."""
        msgs = self.messages
        if not msgs or msgs[-1].get("role") != "user":
            return ""
        content = msgs[-1].get("content")
        if isinstance(content, str):
            return content
        return "\n".join(
            b.get("text", "") for b in (content or []) if isinstance(b, dict) and b.get("type") == "text"
        )

    def message_texts(self, role=None):
        """Text of every message (optionally only ``role`` = "user", "assistant" or
        "system"; 2.1.197 sends hook context as ``role: "system"`` messages inside
        ``messages``), tool_result contents included, in order."""
        return [content_text(m.get("content")) for m in self.messages
                if role is None or m.get("role") == role]

    def system_messages(self):
        """Texts of the ``role: "system"`` entries of ``messages`` (where SessionStart
        ``additionalContext`` arrives, as "SessionStart hook additional context: ...")."""
        return self.message_texts("system")

    def contains(self, needle):
        """True if ``needle`` occurs anywhere in the request (system, messages, tools),
        compared on the decoded JSON text so no escaping surprises."""
        if isinstance(self.body, dict):
            hay = "\n".join([self.system_text] + self.message_texts())
            if needle in hay:
                return True
        return needle in self.raw.decode("utf-8", "replace")

    def to_dict(self):
        return {
            "time": self.time,
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "headers": self.headers,
            "kind": self.kind,
            "step": self.step,
            "reply": repr(self.reply) if self.reply is not None else None,
            "body": self.body if self.body is not None else self.raw.decode("utf-8", "replace"),
        }

    def __repr__(self):
        return "<Request %s %s kind=%s step=%s model=%s>" % (
            self.method, self.path, self.kind, self.step, self.model)


# --------------------------------------------------------------------------- classification

def default_is_conversation(req):
    """True for requests that belong to the scripted agent loop.

    The CLI's main loop and its sub-agents always send the tool list (and stream;
    a non-streaming request with tools would be the CLI's fallback after a broken
    stream, so it is scripted too); its side queries send ``tools: []`` or none.
    """
    if req.method != "POST" or req.path.rstrip("/") != "/v1/messages":
        return False
    body = req.body
    return isinstance(body, dict) and bool(body.get("tools"))


def _output_schema(req):
    """The JSON schema of ``output_config.format`` (structured output), or None."""
    body = req.body if isinstance(req.body, dict) else {}
    fmt = (body.get("output_config") or {}).get("format") or {}
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema" and isinstance(fmt.get("schema"), dict):
        return fmt["schema"]
    return None


def _fill_schema(schema, s, depth=0):
    """A minimal value valid for a simple JSON schema, strings set to ``s``."""
    if depth > 8 or not isinstance(schema, dict):
        return s
    if "enum" in schema and schema["enum"]:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    t = schema.get("type")
    if isinstance(t, list):
        t = t[0] if t else "string"
    if t == "object" or "properties" in schema:
        props = schema.get("properties") or {}
        req = schema.get("required") or list(props)
        return {k: _fill_schema(props.get(k, {}), s, depth + 1) for k in req}
    if t == "array":
        return []
    if t in ("integer", "number"):
        return 0
    if t == "boolean":
        return False
    if t == "null":
        return None
    return s


# --------------------------------------------------------------------------- wire format


def _sse(event, data):
    return ("event: %s\ndata: %s\n\n" % (event, json.dumps(data, separators=(",", ":")))).encode("utf-8")


def _chunks(s, n):
    return [s[i:i + n] for i in range(0, len(s), n)] or [""]


class _Wire(object):
    """Builds message JSON / SSE bodies from a Turn."""

    def __init__(self, fake):
        self.fake = fake

    def content_blocks(self, t, msg_no):
        blocks = []
        if t.text is not None and t.text != "":
            blocks.append({"type": "text", "text": t.text})
        for i, call in enumerate(t.tools):
            tid = call.id or "toolu_%02d%04d%s" % (1, msg_no, "ABCDEFGHIJKLMNOPQRSTUVWX"[i % 24] * 16)
            blocks.append({"type": "tool_use", "id": tid, "name": call.name, "input": call.input})
        if not blocks:
            blocks.append({"type": "text", "text": ""})
        return blocks

    def message(self, t, req, msg_no):
        in_tok = max(1, len(req.raw) // 4)
        blocks = self.content_blocks(t, msg_no)
        out_tok = max(1, len(json.dumps(blocks)) // 4)
        return {
            "id": "msg_01fake%06d" % msg_no,
            "type": "message",
            "role": "assistant",
            "model": req.model or self.fake.model,
            "content": blocks,
            "stop_reason": t.stop_reason,
            "stop_sequence": None,
            "usage": {
                "input_tokens": in_tok,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "output_tokens": out_tok,
                "service_tier": "standard",
            },
        }

    def sse(self, t, req, msg_no):
        msg = self.message(t, req, msg_no)
        start = dict(msg)
        start["content"] = []
        start["stop_reason"] = None
        start["usage"] = dict(msg["usage"], output_tokens=1)
        out = [_sse("message_start", {"type": "message_start", "message": start}),
               _sse("ping", {"type": "ping"})]
        for idx, block in enumerate(msg["content"]):
            if block["type"] == "text":
                out.append(_sse("content_block_start", {
                    "type": "content_block_start", "index": idx,
                    "content_block": {"type": "text", "text": ""}}))
                for piece in _chunks(block["text"], 40):
                    out.append(_sse("content_block_delta", {
                        "type": "content_block_delta", "index": idx,
                        "delta": {"type": "text_delta", "text": piece}}))
            else:
                out.append(_sse("content_block_start", {
                    "type": "content_block_start", "index": idx,
                    "content_block": {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}}))
                js = json.dumps(block["input"], separators=(",", ":"))
                for piece in [""] + _chunks(js, 40):
                    out.append(_sse("content_block_delta", {
                        "type": "content_block_delta", "index": idx,
                        "delta": {"type": "input_json_delta", "partial_json": piece}}))
            out.append(_sse("content_block_stop", {"type": "content_block_stop", "index": idx}))
        out.append(_sse("message_delta", {
            "type": "message_delta",
            "delta": {"stop_reason": msg["stop_reason"], "stop_sequence": None},
            "usage": {"output_tokens": msg["usage"]["output_tokens"]}}))
        out.append(_sse("message_stop", {"type": "message_stop"}))
        return b"".join(out)


# --------------------------------------------------------------------------- server


class _Server(ThreadingMixIn, HTTPServer):
    daemon_threads = True
    block_on_close = False  # don't wait for idle keep-alive connections on stop()
    allow_reuse_address = True

    def handle_error(self, request, client_address):  # client hung up: not our business
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-anthropic/1"
    timeout = 60  # per-connection socket timeout; a stuck client cannot hang a thread forever

    def log_message(self, fmt, *args):  # keep test output clean
        pass

    # every method goes through _handle
    def do_POST(self):
        self._handle()

    def do_GET(self):
        self._handle()

    def do_HEAD(self):
        self._handle()

    def do_PUT(self):
        self._handle()

    def do_DELETE(self):
        self._handle()

    def do_PATCH(self):
        self._handle()

    def do_OPTIONS(self):
        self._handle()

    def _read_body(self):
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            data = b""
            while True:
                line = self.rfile.readline(65537)
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return data
                data += self.rfile.read(size)
                self.rfile.readline(65537)
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def _handle(self):
        fake = self.server.fake
        parts = urlsplit(self.path)
        raw = self._read_body()
        headers = {k.lower(): v for k, v in self.headers.items()}
        req = Request(self.command, parts.path, parse_qs(parts.query), headers, raw)
        try:
            status, ctype, payload, extra = fake._respond(req)
        except Exception as exc:  # a broken script step must not hang the client
            fake.errors.append(exc)
            # 400 is not retried by the CLI, so the run ends at once with this message
            status, ctype, extra = 400, "application/json", {}
            payload = json.dumps({"type": "error", "error": {
                "type": "invalid_request_error", "message": "fake_anthropic script error: %r" % (exc,)}}).encode()
        fake._record(req)
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("request-id", "req_fake%06d" % len(fake.requests))
        for k, v in extra.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            try:
                self.wfile.write(payload)
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                pass


class FakeAnthropic(object):
    """Scripted Messages API on 127.0.0.1:<ephemeral port>, served from a thread.

    ``FakeAnthropic(script=(), model=DEFAULT_MODEL, default_text="done",
    is_conversation=default_is_conversation, side_reply="ok", log_path=None,
    host="127.0.0.1", port=0)``

    Use as a context manager (``with FakeAnthropic(script) as fake:``) or call
    ``start()`` / ``stop()``. ``base_url`` is e.g. ``http://127.0.0.1:41234``.
    ``extend(steps)`` appends to the script while running.
    """

    def __init__(self, script=(), model=DEFAULT_MODEL, default_text="done",
                 is_conversation=default_is_conversation, side_reply="ok",
                 log_path=None, host="127.0.0.1", port=0):
        self.script = list(script)
        self.model = model
        self.default_text = default_text
        self.is_conversation = is_conversation
        self.side_reply = side_reply
        self.log_path = log_path
        self.host = host
        self.port = port
        self.requests = []
        self.errors = []  # exceptions raised by callable steps
        self._next_step = 0
        self._msg_no = 0
        self._lock = threading.Lock()
        self._server = None
        self._thread = None
        self._wire = _Wire(self)

    # -- lifecycle
    def start(self):
        if self._server is not None:
            return self
        self._server = _Server((self.host, self.port), _Handler)
        self._server.fake = self
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.1},
                                        name="fake-anthropic", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        self._server = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    @property
    def base_url(self):
        return "http://%s:%d" % (self.host, self.port)

    # -- script control
    def extend(self, steps):
        with self._lock:
            self.script.extend(steps)

    @property
    def steps_used(self):
        """How many conversation requests were answered (including ones past the script)."""
        return self._next_step

    @property
    def script_exhausted(self):
        return self._next_step >= len(self.script)

    # -- views of the record
    @property
    def conversation(self):
        """The requests that consumed script steps, in order."""
        return [r for r in self.requests if r.kind == "conversation"]

    @property
    def side_requests(self):
        return [r for r in self.requests if r.kind != "conversation"]

    def all_user_text(self, requests=None):
        """Every distinct user text block (not tool results) seen in the conversation
        requests, in first-seen order, joined by newlines; handy for
        ``assert "Stop hook feedback:\nKEEP GOING" in fake.all_user_text()``."""
        reqs = self.conversation if requests is None else requests
        seen, out = set(), []
        for r in reqs:
            for t in r.user_texts():
                if t not in seen:
                    seen.add(t)
                    out.append(t)
        return "\n".join(out)

    def find(self, needle, kind="conversation"):
        """Requests (of ``kind``, or all if None) that contain ``needle``."""
        return [r for r in self.requests if (kind is None or r.kind == kind) and r.contains(needle)]

    def all_tool_results(self):
        """Tool results of the final conversation request (it carries the whole history)."""
        conv = self.conversation
        return conv[-1].tool_results() if conv else []

    def dump(self, path):
        """Write every recorded request as JSON lines (for debugging)."""
        with open(path, "w") as f:
            for r in self.requests:
                f.write(json.dumps(r.to_dict()) + "\n")

    # -- internals
    def _record(self, req):
        with self._lock:
            self.requests.append(req)
        if self.log_path:
            try:
                with open(self.log_path, "a") as f:
                    f.write(json.dumps(req.to_dict()) + "\n")
            except OSError:
                pass

    def _take_step(self, req):
        with self._lock:
            idx = self._next_step
            self._next_step += 1
            step = self.script[idx] if idx < len(self.script) else None
        req.step = idx
        if callable(step) and not isinstance(step, (Turn, ToolCall)):
            step = step(req)
        return _coerce_step(step, self.default_text)

    def _respond(self, req):
        path = req.path.rstrip("/")
        if req.method == "POST" and path == "/v1/messages/count_tokens":
            req.kind = "count_tokens"
            n = max(1, len(req.raw) // 4)
            return 200, "application/json", json.dumps({"input_tokens": n}).encode(), {}
        if req.method == "POST" and path == "/v1/messages":
            if self.is_conversation(req):
                req.kind = "conversation"
                t = self._take_step(req)
            else:
                req.kind = "side"
                sr = self.side_reply(req) if callable(self.side_reply) else self.side_reply
                schema = _output_schema(req)
                if schema is not None and isinstance(sr, str):
                    # e.g. the TUI's session-title query asks for {"title": str}
                    sr = json.dumps(_fill_schema(schema, sr))
                t = _coerce_step(sr, self.default_text)
            req.reply = t
            with self._lock:
                self._msg_no += 1
                msg_no = self._msg_no
            if t.error:
                status, etype, message = t.error
                body = {"type": "error", "error": {"type": etype, "message": message}}
                return status, "application/json", json.dumps(body).encode(), {}
            if req.stream:
                return 200, "text/event-stream; charset=utf-8", self._wire.sse(t, req, msg_no), {
                    "Cache-Control": "no-cache"}
            return 200, "application/json", json.dumps(self._wire.message(t, req, msg_no)).encode(), {}
        if req.method == "POST":
            return 404, "application/json", json.dumps({"type": "error", "error": {
                "type": "not_found_error", "message": "fake_anthropic: no route %s" % req.path}}).encode(), {}
        # GET/HEAD/OPTIONS probes and anything else: a harmless 200
        return 200, "application/json", b"{}", {}


if __name__ == "__main__":  # manual poking: python3 fake_anthropic.py -> prints base URL, serves "done"
    import sys
    with FakeAnthropic(log_path=os.environ.get("FAKE_ANTHROPIC_LOG")) as f:
        sys.stdout.write(f.base_url + "\n")
        sys.stdout.flush()
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
