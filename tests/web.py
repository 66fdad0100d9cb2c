"""HTTP against a real worker's web port, for the tests that run one as a process."""

from __future__ import annotations

import urllib.error
import urllib.request


def http(url: str, data: bytes | None = None, timeout: float = 5.0) -> tuple[int, bytes]:
    """(status, body) of a GET, or of a JSON POST when ``data`` is given; (0, b"") while nothing
    listens, so a test can poll a worker that is still starting."""
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""
