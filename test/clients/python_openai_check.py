"""Calls kiapi's OpenAI Images API with the official `openai` Python SDK, unchanged.

Usage: python_openai_check.py BASE_URL TOKEN

Against a live server with the preview engine, a bearer token and KIAPI_MAX_QUEUE=2
(run-openai-sdk.sh starts one): generations (b64_json, url, every output format, n = 2), edits
with one and two images, streaming with partial images, the error cases and the model list.
Exits non-zero with a message on the first thing that is not as documented.
"""

from __future__ import annotations

import base64
import json
import struct
import sys
import urllib.request
import zlib

import openai
from openai import OpenAI

MAGIC = {
    "png": lambda b: b[:8] == b"\x89PNG\r\n\x1a\n",
    "jpeg": lambda b: b[:3] == b"\xff\xd8\xff",
    "webp": lambda b: b[:4] == b"RIFF" and b[8:12] == b"WEBP",
}
SMALL = {"size": "64x64", "extra_body": {"steps": 2}}


def fail(message: str) -> None:
    print(f"python openai check: {message}", file=sys.stderr)
    sys.exit(1)


def check(ok: bool, message: str) -> None:
    if not ok:
        fail(message)


def png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A solid-colour PNG, made here so the check needs no imaging library."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    row = b"\x00" + bytes(rgb) * width
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    raw = zlib.compress(row * height)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


def png_size(data: bytes) -> tuple[int, int]:
    return struct.unpack(">II", data[16:24])


def kiapi(base: str, token: str, method: str, path: str, body: object | None = None) -> dict:
    req = urllib.request.Request(
        base + path,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"authorization": f"Bearer {token}", "content-type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=60) as res:
        return json.loads(res.read() or b"{}")


def expect_error(
    call, error: type[openai.APIStatusError], param: str | None, text: str
) -> openai.APIStatusError:
    try:
        call()
    except error as err:
        body = err.body if isinstance(err.body, dict) else {}
        check(
            body.get("param") == param,
            f"{error.__name__}: param {body.get('param')!r}, expected {param!r}: {body}",
        )
        check(
            text in str(body.get("message")),
            f"{error.__name__}: message {body.get('message')!r} lacks {text!r}",
        )
        return err
    fail(f"expected {error.__name__} ({text})")
    raise AssertionError


def generations(ai: OpenAI, token: str) -> None:
    res = ai.images.generate(prompt="a lighthouse at dusk", **SMALL)
    image = base64.b64decode(res.data[0].b64_json)
    check(MAGIC["png"](image) and png_size(image) == (64, 64), "b64_json is not a 64x64 PNG")
    check(res.usage is None, "usage must be absent: kiapi counts no tokens")

    res = ai.images.generate(prompt="a red kite", response_format="url", **SMALL)
    url = res.data[0].url
    check(url.startswith("http://127.0.0.1:") and url.endswith("/download"), f"url {url!r}")
    req = urllib.request.Request(url, headers={"authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=30) as got:
        check(MAGIC["png"](got.read()), "the url does not download a PNG")

    for fmt in ("png", "jpeg", "webp"):
        res = ai.images.generate(prompt="a square", output_format=fmt, output_compression=60, **SMALL)
        check(MAGIC[fmt](base64.b64decode(res.data[0].b64_json)), f"output_format {fmt} not honoured")

    res = ai.images.generate(prompt="two boats", n=2, size="64x64", extra_body={"steps": 2, "seed": 10})
    check(len(res.data) == 2, f"n=2 gave {len(res.data)} images")


def edits(ai: OpenAI) -> None:
    red = png(16, 16, (200, 30, 30))
    res = ai.images.edit(image=("red.png", red, "image/png"), prompt="make it blue", **SMALL)
    check(png_size(base64.b64decode(res.data[0].b64_json)) == (64, 64), "edit of one image")
    green = png(16, 16, (30, 200, 30))
    res = ai.images.edit(
        image=[("red.png", red, "image/png"), ("green.png", green, "image/png")],
        prompt="combine them",
        **SMALL,
    )
    check(len(res.data) == 1 and res.data[0].b64_json, "edit of two images")


def streaming(ai: OpenAI) -> None:
    stream = ai.images.generate(
        prompt="streamed", stream=True, partial_images=2, size="64x64", extra_body={"steps": 6}
    )
    events = list(stream)
    kinds = [e.type for e in events]
    want = ["image_generation.partial_image", "image_generation.partial_image", "image_generation.completed"]
    check(kinds == want, f"generation stream events {kinds}")
    check([e.partial_image_index for e in events[:2]] == [0, 1], "partial_image_index")
    check(MAGIC["jpeg"](base64.b64decode(events[0].b64_json)), "a partial image is a JPEG preview")
    check(MAGIC["png"](base64.b64decode(events[-1].b64_json)), "the completed image is the PNG")

    stream = ai.images.edit(
        image=("x.png", png(16, 16, (0, 0, 0)), "image/png"),
        prompt="streamed edit",
        stream=True,
        partial_images=1,
        size="64x64",
        extra_body={"steps": 4},
    )
    kinds = [e.type for e in stream]
    check(kinds == ["image_edit.partial_image", "image_edit.completed"], f"edit stream events {kinds}")


def errors(ai: OpenAI, base: str, token: str) -> None:
    before = kiapi(base, token, "GET", "/v1/files")["data"]
    expect_error(lambda: ai.images.generate(prompt="x", size="65x64"), openai.BadRequestError, "size", "16")
    expect_error(lambda: ai.images.generate(prompt="x", n=9), openai.BadRequestError, "n", "'n' must be")
    expect_error(
        lambda: ai.images.generate(prompt="x", model="dall-e-3"), openai.BadRequestError, "model", "dall-e-3"
    )
    expect_error(
        lambda: ai.images.generate(prompt="x", extra_body={"colour": "red"}),
        openai.BadRequestError,
        "colour",
        "Unknown parameter",
    )
    img = ("a.png", png(8, 8, (1, 2, 3)), "image/png")
    expect_error(
        lambda: ai.images.edit(image=img, mask=img, prompt="x"), openai.BadRequestError, "mask", "masks"
    )
    expect_error(lambda: ai.images.create_variation(image=img), openai.BadRequestError, None, "variations")
    expect_error(lambda: ai.models.retrieve("gpt-image-1"), openai.NotFoundError, "model", "does not exist")
    wrong = OpenAI(base_url=base + "/v1", api_key="wrong", max_retries=0)
    expect_error(lambda: wrong.images.generate(prompt="x"), openai.AuthenticationError, None, "unauthorized")
    check(kiapi(base, token, "GET", "/v1/files")["data"] == before, "a refused request stored a file")

    # A full queue: one long job running and KIAPI_MAX_QUEUE (2) queued behind it.
    blocker = {"prompt": "blocker", "width": 64, "height": 64, "steps": 100, "mode": "async"}
    jobs = [kiapi(base, token, "POST", "/v1/image/qwen/generate", blocker)["job_id"]]
    quick = {**blocker, "steps": 1}
    jobs += [kiapi(base, token, "POST", "/v1/image/qwen/generate", quick)["job_id"] for _ in range(2)]
    try:
        err = expect_error(
            lambda: ai.images.generate(prompt="x"), openai.RateLimitError, None, "queue is full"
        )
        check(err.response.headers.get("retry-after", "").isdigit(), "429 without Retry-After")
    finally:
        for job in jobs:
            kiapi(base, token, "POST", f"/v1/jobs/{job}/cancel")


def models(ai: OpenAI) -> None:
    ids = [m.id for m in ai.models.list()]
    check(ids == ["qwen-image", "qwen-image-edit", "ideogram-4"], f"models {ids}")
    for model_id in ids:
        check(ai.models.retrieve(model_id).id == model_id, f"retrieve {model_id}")


def main() -> None:
    base, token = sys.argv[1], sys.argv[2]
    ai = OpenAI(base_url=base + "/v1", api_key=token, max_retries=0)
    generations(ai, token)
    edits(ai)
    streaming(ai)
    models(ai)
    errors(ai, base, token)
    print("python openai check: ok")


if __name__ == "__main__":
    main()
