"""A fake OpenAI-compatible chat-completions server on 127.0.0.1 (never the network), for the LLM backend's
tests and the fault-injection harness."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeOpenAI:
    """A chat-completions endpoint whose next answers follow a script: "ok", "429", "500", "bad", "slow"."""

    def __init__(self):
        self.script: list[str] = []
        self.default = "ok"
        self.requests: list[dict] = []
        self.auth: list[str | None] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.requests.append(body)
                fake.auth.append(self.headers.get("Authorization"))
                mode = fake.script.pop(0) if fake.script else fake.default
                if mode in ("429", "500"):
                    self.send_response(int(mode))
                    self.send_header("Retry-After", "0")
                    self.end_headers()
                    self.wfile.write(b'{"error": "try later"}')
                    return
                if mode == "slow":
                    time.sleep(1.0)
                prompt = body["messages"][0]["content"]
                topic = prompt.rsplit("Document:", 1)[-1].split()[0:3]
                content = "not json at all {" if mode == "bad" else None
                payload = {
                    "choices": [
                        {"message": {"content": json.dumps([f"what about {' '.join(topic)} {k}" for k in range(3)])}}
                    ],
                    "usage": {"prompt_tokens": 50, "completion_tokens": 12},
                }
                data = content.encode() if content else json.dumps(payload).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
