"""A local HTTP server speaking the OpenAI chat-completions protocol, for tests and benchmarks.

No LLM can run on the CI machine, so the ``openai`` backend is exercised against this real
server over real HTTP: configurable latency, HTTP errors, malformed replies and a naive
"model" that obeys instructions found in product text (to prove the parser refuses them).
Replies are deterministic: the score is derived from a hash of the prompt.

    python -m models.fake_openai --port 8000 --latency-ms 50
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeLLM:
    """The server's behaviour; change attributes between requests (thread-safe counters)."""

    def __init__(self, latency_ms: float = 0.0, error_rate: float = 0.0, malformed_rate: float = 0.0,
                 fail_first: int = 0, obey_injection: bool = False, seed: int = 0):
        self.latency_ms = latency_ms
        self.error_rate = error_rate
        self.malformed_rate = malformed_rate
        self.fail_first = fail_first  # answer HTTP 503 to the first N requests
        self.obey_injection = obey_injection
        self.down = False  # answer every request with HTTP 503
        self.replies: list[str] = []  # scripted replies, used first
        self.malformed_if: str | None = None  # an unparseable reply to prompts containing this
        self.requests = 0
        self.prompts: list[str] = []
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    def respond(self, body: dict) -> tuple[int, str]:
        with self._lock:
            self.requests += 1
            n = self.requests
            prompt = "\n".join(str(m.get("content", "")) for m in body.get("messages", []))
            self.prompts.append(prompt)
            roll_error, roll_bad = self._rng.random(), self._rng.random()
            scripted = self.replies.pop(0) if self.replies else None
        if self.latency_ms:
            time.sleep(self.latency_ms / 1000.0)
        if self.down or n <= self.fail_first or roll_error < self.error_rate:
            return 503, json.dumps({"error": {"message": "overloaded"}})
        if scripted is not None:
            text = scripted
        elif self.obey_injection and "answer 10" in prompt.lower():
            text = "10"  # what a model that follows the injected instruction would say
        elif roll_bad < self.malformed_rate or (self.malformed_if and self.malformed_if in prompt):
            text = "I think these go together quite well!"
        else:
            digest = int(hashlib.sha1(prompt.encode()).hexdigest(), 16)
            text = f"score: {digest % 10 + 1}\nreason: fake model, deterministic for this prompt"
        return 200, json.dumps({
            "id": f"chatcmpl-{n}", "object": "chat.completion", "model": body.get("model", "fake"),
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": text}}],
        })


def _handler(llm: FakeLLM):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, like a real server
        disable_nagle_algorithm = True  # headers and body are separate writes: no 40 ms stalls

        def do_POST(self):  # noqa: N802 - http.server's naming
            length = int(self.headers.get("Content-Length", 0))
            try:
                body = json.loads(self.rfile.read(length))
            except ValueError:
                status, text = 400, json.dumps({"error": {"message": "bad JSON"}})
            else:
                if not self.path.endswith("/chat/completions"):
                    status, text = 404, json.dumps({"error": {"message": "not found"}})
                else:
                    status, text = llm.respond(body)
            data = text.encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):  # quiet
            pass

    return Handler


class _Server(ThreadingHTTPServer):
    request_queue_size = 1024  # socketserver's default backlog of 5 drops bursts of connects
    daemon_threads = True


@contextmanager
def serve(llm: FakeLLM | None = None, port: int = 0):
    """Run the server in a thread; yields (base_url, llm)."""
    llm = llm or FakeLLM()
    server = _Server(("127.0.0.1", port), _handler(llm))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", llm
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def serve_in_process(latency_ms: float = 0.0):
    """Run the server in a child process (benchmarks: keeps it off the measured process's GIL)."""
    child = subprocess.Popen([sys.executable, "-m", "models.fake_openai", "--port", "0",
                              "--latency-ms", str(latency_ms)], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None  # stdout=PIPE
    try:
        url = child.stdout.readline().strip()
        if not url.startswith("http"):
            raise RuntimeError("fake OpenAI server did not start")
        yield url
    finally:
        child.terminate()
        child.wait(timeout=10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8000, help="0 = any free port")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="added to every reply")
    parser.add_argument("--error-rate", type=float, default=0.0, help="share of HTTP 503 replies")
    parser.add_argument("--malformed-rate", type=float, default=0.0, help="share of unparseable replies")
    args = parser.parse_args(argv)
    llm = FakeLLM(args.latency_ms, args.error_rate, args.malformed_rate)
    with serve(llm, args.port) as (url, _):
        print(url, flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
