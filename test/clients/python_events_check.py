"""Watches kiapi's job events from Python with httpx + httpx-sse, as a Python client would.

Usage: python_events_check.py BASE_URL TOKEN

Against a live server with the preview engine and slow steps (run-clients.sh starts one): a job
watched from submission to its end with previews, its event ids, a reconnect with the terminal
event's id (204: nothing more), and the all-jobs stream seeing another job end. Exits non-zero
with a message on the first thing that is not as documented.
"""

from __future__ import annotations

import base64
import json
import sys
import threading

import httpx
from httpx_sse import connect_sse

TERMINAL = {"succeeded", "failed", "canceled"}


def fail(message: str) -> None:
    print(f"python events check: {message}", file=sys.stderr)
    sys.exit(1)


def submit(client: httpx.Client, body: dict[str, object]) -> str:
    res = client.post("/v1/image/qwen/generate", json={**body, "mode": "async"})
    if res.status_code != 202:
        fail(f"submission answered {res.status_code}: {res.text}")
    return str(res.json()["job_id"])


def watch_job(client: httpx.Client, job_id: str) -> list[tuple[str, str, dict[str, object]]]:
    seen: list[tuple[str, str, dict[str, object]]] = []
    with connect_sse(
        client, "GET", f"/v1/jobs/{job_id}/events", params={"previews": 2, "preview_size": 64}
    ) as source:
        if source.response.status_code != 200:
            fail(f"events answered {source.response.status_code}")
        if not source.response.headers["content-type"].startswith("text/event-stream"):
            fail(f"events content type {source.response.headers['content-type']}")
        for sse in source.iter_sse():
            seen.append((sse.id, sse.event, json.loads(sse.data)))
            if sse.event in TERMINAL:
                break
    return seen


def main() -> None:
    base, token = sys.argv[1], sys.argv[2]
    headers = {"authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(base_url=base, headers=headers, timeout=httpx.Timeout(60.0, read=120.0)) as client:
        # The all-jobs stream, watched in the background for the second job's end.
        all_seen: list[tuple[str, dict[str, object]]] = []
        ready = threading.Event()
        second: dict[str, str] = {}
        done = threading.Event()

        def watch_all() -> None:
            with (
                httpx.Client(base_url=base, headers=headers, timeout=httpx.Timeout(60.0, read=120.0)) as c,
                connect_sse(c, "GET", "/v1/events", params={"status": "succeeded"}) as source,
            ):
                ready.set()
                for sse in source.iter_sse():
                    data = json.loads(sse.data)
                    all_seen.append((sse.event, data))
                    if second and data.get("id") == second["id"]:
                        done.set()
                        return

        watcher = threading.Thread(target=watch_all, daemon=True)
        watcher.start()
        if not ready.wait(30):
            fail("the all-jobs stream did not open")

        job_id = submit(
            client, {"prompt": "a lighthouse", "width": 128, "height": 128, "steps": 8, "seed": 5}
        )
        events = watch_job(client, job_id)
        names = [name for _, name, _ in events]
        if names[-1] != "succeeded":
            fail(f"the job's stream did not end with succeeded: {names}")
        if events[-1][2].get("id") != job_id or events[-1][2].get("status") != "succeeded":
            fail(f"the terminal event is not the job JSON: {events[-1][2]}")
        if len({event_id for event_id, _, _ in events}) != len(events) or not all(
            event_id for event_id, _, _ in events
        ):
            fail("event ids are missing or repeated")
        steps = [
            data["step"]
            for _, name, data in events
            if name == "progress" and data.get("label") == "denoising"
        ]
        if not steps or steps[-1] != 8:
            fail(f"progress steps: {steps}")
        previews = [data for _, name, data in events if name == "preview"]
        if not previews:
            fail("no preview arrived")
        for p in previews:
            image = str(p["image"])
            if (
                not image.startswith("data:image/jpeg;base64,")
                or base64.b64decode(image.split(",", 1)[1])[:3] != b"\xff\xd8\xff"
            ):
                fail("a preview is not a JPEG data URL")
            if int(str(p["step"])) % 2 != 0:
                fail(f"a preview at step {p['step']} (asked: every 2nd)")

        # Reconnecting with the terminal event's id: nothing more to send.
        again = client.get(f"/v1/jobs/{job_id}/events", headers={"last-event-id": events[-1][0]})
        if again.status_code != 204:
            fail(f"a reconnect after the end answered {again.status_code}, not 204")

        second["id"] = submit(client, {"prompt": "another", "width": 64, "height": 64, "steps": 2, "seed": 6})
        if not done.wait(60):
            fail(f"the all-jobs stream did not report the second job's end; saw {[e for e, _ in all_seen]}")
        if any(name != "succeeded" for name, _ in all_seen):
            fail(f"the status filter let other events through: {[e for e, _ in all_seen]}")
    summary = f"{len(events)} events, {len(previews)} previews, all-jobs stream saw {len(all_seen)}"
    print(f"python events check: ok ({summary})")


if __name__ == "__main__":
    main()
