"""A slow line in front of a local server: a TCP proxy that shapes every connection of a visitor
together, as one access line does (bandwidth shared between all downloads, one for uploads, and
a round-trip delay on every packet). Chrome's network emulation does not reach the page's
workers, where the decoder downloads; this does.

    with SlowLink(8000, down_mbit=1.6, up_mbit=0.75, rtt_ms=150) as port:
        page.goto(f"http://127.0.0.1:{port}/")
"""

import asyncio
import contextlib
import socket
import threading
import time

CHUNK = 16 * 1024  # small pieces, so that parallel downloads share the line


class Direction:
    """One direction of the line: a shared clock of when it is free again."""

    def __init__(self, mbit: float, delay_s: float) -> None:
        self.rate = mbit * 1e6 / 8  # bytes per second
        self.delay = delay_s
        self.free_at = 0.0

    def slot(self, n: int) -> float:
        """When `n` bytes queued now have left the line."""
        now = time.monotonic()
        self.free_at = max(now, self.free_at) + n / self.rate
        return self.free_at


class SlowLink:
    def __init__(self, target_port: int, down_mbit: float, up_mbit: float, rtt_ms: float) -> None:
        self.target = target_port
        self.down = Direction(down_mbit, rtt_ms / 2000)
        self.up = Direction(up_mbit, rtt_ms / 2000)
        self.loop = asyncio.new_event_loop()
        self.port = 0

    async def _pipe(self, reader, writer, line: Direction) -> None:
        # A reader feeds a queue; the sender leaves each piece when the line has carried it and
        # its one-way delay has passed (pieces in flight overlap: latency is not a rate limit).
        queue: asyncio.Queue = asyncio.Queue()

        async def send() -> None:
            while True:
                item = await queue.get()
                if item is None:
                    break
                due, data = item
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                writer.write(data)
                await writer.drain()
            with contextlib.suppress(Exception):
                writer.close()

        sender = asyncio.ensure_future(send())
        try:
            while True:
                data = await reader.read(CHUNK)
                if not data:
                    break
                done = line.slot(len(data))
                await queue.put((done + line.delay, data))
                await asyncio.sleep(max(0.0, done - time.monotonic()))  # back-pressure: the line's pace
        except (ConnectionError, OSError):
            pass
        await queue.put(None)
        await sender

    async def _client(self, c_reader, c_writer) -> None:
        try:
            s_reader, s_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            c_writer.close()
            return
        await asyncio.gather(
            self._pipe(c_reader, s_writer, self.up), self._pipe(s_reader, c_writer, self.down), return_exceptions=True
        )

    def __enter__(self) -> int:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            server = self.loop.run_until_complete(asyncio.start_server(self._client, sock=sock))
            ready.set()
            self.loop.run_forever()
            server.close()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        ready.wait()
        return self.port

    def __exit__(self, *exc) -> None:
        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(cancel_all(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
