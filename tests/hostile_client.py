"""A raw HTTP client for the Gradio protocol, as an attacker uses it (no gradio_client checks)."""

import io
import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Optional

import httpx


class RawGradio:
    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.http = httpx.Client(timeout=30)
        self.config = self.http.get(f"{self.url}/config").json()
        self.components = {c["id"]: c for c in self.config["components"]}

    def dependencies(self):
        return list(enumerate(self.config["dependencies"]))

    def fn_index(self, name: str) -> int:
        for i, d in self.dependencies():
            if d.get("api_name") == name:
                return i
        raise KeyError(name)

    def input_types(self, fn_index: int):
        return [self.components[j]["type"] for j in self.config["dependencies"][fn_index]["inputs"]]

    def event(
        self, fn_index: int, data: list, event_data: Any = None, session: Optional[str] = None, timeout: float = 60
    ) -> dict:
        """Run one event through the queue; -> {"success", "output"/"error", "seconds"}."""
        session = session or uuid.uuid4().hex[:11]
        dep = self.config["dependencies"][fn_index]
        trigger = dep["targets"][0][0] if dep["targets"] else None
        t = time.perf_counter()
        body = {
            "data": data,
            "event_data": event_data,
            "fn_index": fn_index,
            "trigger_id": trigger,
            "session_hash": session,
        }
        # json.dumps writes inf/nan as Infinity/NaN, as a hostile client may
        r = self.http.post(
            f"{self.url}/gradio_api/queue/join", content=json.dumps(body), headers={"Content-Type": "application/json"}
        )
        if r.status_code != 200:
            return {
                "success": False,
                "error": f"HTTP {r.status_code}: {r.text[:500]}",
                "seconds": 0.0,
                "status": r.status_code,
            }
        event_id = r.json()["event_id"]
        with self.http.stream(
            "GET", f"{self.url}/gradio_api/queue/data", params={"session_hash": session}, timeout=timeout
        ) as stream:
            for line in stream.iter_lines():
                if not line.startswith("data:"):
                    continue
                msg = json.loads(line[5:])
                if msg.get("event_id") != event_id or msg.get("msg") != "process_completed":
                    continue
                out = msg.get("output") or {}
                res = {"success": bool(msg.get("success")), "seconds": time.perf_counter() - t}
                if res["success"]:
                    res["output"] = out.get("data")
                else:
                    res["error"] = str(out.get("error"))
                return res
        return {"success": False, "error": "stream ended without a result", "seconds": time.perf_counter() - t}

    def upload(self, data: bytes, name: str = "image.png") -> httpx.Response:
        return self.http.post(f"{self.url}/gradio_api/upload", files={"files": (name, io.BytesIO(data))})

    def uploaded(self, data: bytes, name: str = "image.png") -> dict:
        r = self.upload(data, name)
        r.raise_for_status()
        return file_data(r.json()[0], name)

    def alive(self) -> bool:
        try:
            pages = [self.http.get(self.url + p, timeout=5).status_code for p in ("/", "/msw/config.json", "/config")]
        except httpx.HTTPError:
            return False
        return all(code == 200 for code in pages)


def file_data(path: str, name: Optional[str] = None) -> dict:
    return {"path": path, "orig_name": name or Path(path).name, "meta": {"_type": "gradio.FileData"}}


def _status_bytes(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field}")


def rss_bytes(pid: int) -> int:
    return _status_bytes(pid, "VmRSS")


def reset_peak_rss(pid: int) -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) of `pid` to its current RSS (Linux >= 4.0;
    needs the right to write /proc/PID/clear_refs: the same user, or root)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class PeakRss:
    """Peak RSS of a process over a `with` block: the kernel's VmHWM, reset on entry (exact,
    however short the peak); where it cannot be reset, RSS sampled every 20 ms.
    `.growth` = peak minus the RSS at entry."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def __enter__(self):
        self.exact = reset_peak_rss(self.pid)
        self.start = self.peak = rss_bytes(self.pid)
        self._stop = threading.Event()

        def run():
            while not self._stop.wait(0.02):
                self.peak = max(self.peak, rss_bytes(self.pid))

        self._thread = None
        if not self.exact:
            self._thread = threading.Thread(target=run, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        now = _status_bytes(self.pid, "VmHWM") if self.exact else rss_bytes(self.pid)
        self.peak = max(self.peak, now)

    @property
    def growth(self) -> int:
        return self.peak - self.start
