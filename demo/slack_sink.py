"""A stand-in for Slack's incoming webhooks: a local HTTP server that keeps what it is sent.

The soak posts through the real ``SlackWebhookHook``; the demo and the tests point the
``soak_slack`` connection here and read what arrived.
"""

from __future__ import annotations

import json
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class SlackSink:
    """Receives webhook POSTs on ``host`` (127.0.0.1); ``messages`` holds each JSON body's ``text``.

    The webhook token (the secret part of the URL) is random per sink; a POST to any
    other path is answered 404 and not kept, as Slack would refuse it.
    """

    def __init__(self, host: str = "127.0.0.1"):
        self.host = host
        self.messages: list[str] = []
        self.token = f"T0000/B0000/{secrets.token_urlsafe(16)}"
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path.strip("/") != sink.token:
                    self.send_response(404)
                    self.end_headers()
                    return
                try:
                    sink.messages.append(json.loads(body).get("text", ""))
                except ValueError:
                    sink.messages.append(body.decode(errors="replace"))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):  # keep the token out of stderr
                pass

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "SlackSink":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def airflow_connection(self) -> str:
        """``AIRFLOW_CONN_SOAK_SLACK`` value (JSON) pointing the Slack webhook hook here."""
        return json.dumps({"conn_type": "slackwebhook", "host": f"{self.host}:{self.port}", "schema": "http",
                           "password": self.token})
