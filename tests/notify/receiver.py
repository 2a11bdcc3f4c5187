"""A real HTTP webhook receiver on 127.0.0.1 (http.server in a thread) that checks signatures."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tuneloop.notify import verify_signature


class Receiver:
    """Answers with the scripted statuses in order (then ``default``), refuses bad signatures with 401.

    ``requests``: one dict per request (event, delivery, signed, body, status answered).
    """

    def __init__(self, secret: str | None = None, script: list[int] | None = None, default: int = 200) -> None:
        self.secret, self.script, self.default = secret, list(script or []), default
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                signed = None
                if receiver.secret is not None:
                    signed = verify_signature(receiver.secret, raw, self.headers.get("X-Tuneloop-Timestamp", ""),
                                              self.headers.get("X-Tuneloop-Signature", ""))
                with receiver._lock:
                    status = 401 if signed is False else (receiver.script.pop(0) if receiver.script else receiver.default)
                    receiver.requests.append({"event": self.headers.get("X-Tuneloop-Event"),
                                              "delivery": self.headers.get("X-Tuneloop-Delivery"),
                                              "signed": signed, "body": json.loads(raw), "status": status})
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"ok" if status < 300 else b"nope")

            def log_message(self, *args):  # keep the test output clean
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/tuneloop"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "Receiver":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def of(self, event: str) -> list[dict]:
        return [r for r in self.requests if r["event"] == event]
