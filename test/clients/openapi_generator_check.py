"""Calls every operation of the Python clients openapi-generator (its `python` generator) made from
kiapi's served documents, against a live server, and fails unless each answers as its document
says: health (whose `relay` is null), the Files API (upload, paging, the content_type and job_id
filters, download), a sync and an async generation on every family operation with the job polled
to its end, the event streams, cancel and delete.

Run by test/clients/run-clients.sh once the packages kiapi_og_root, kiapi_og_qwen and
kiapi_og_ideogram4 are installed in this venv: argv = base URL, bearer token. The generation
bodies are the documents' own examples, read through the generated models (from_dict), so a
model that cannot carry its example fails here too.
"""

import base64
import importlib
import inspect
import json
import sys
import time
import urllib.request

base, token = sys.argv[1], sys.argv[2]

# A 16x16 PNG to upload.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAABAAAAAQCAIAAACQkWg2AAAACXBIWXMAAAPoAAAD6AG1e1JrAAAAGUlEQVQokWNwa9pCEmIY1dA0GkpuwzVpAACXG3wQY/W53wAAAABJRU5ErkJggg=="
)
IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"RIFF")
FINISHED = ("succeeded", "failed", "canceled")
POLL_DEADLINE_S = 60

called: set[str] = set()
failures: list[str] = []


def api(package: str, authenticated: bool = True):
    """The generated DefaultApi of a package, pointed at the server under test."""
    mod = importlib.import_module(package)
    config = mod.Configuration(host=base, access_token=token if authenticated else None)
    return mod.DefaultApi(mod.ApiClient(config))


def operations(client) -> set[str]:
    """The operation methods of a generated DefaultApi (each also has two variants, not counted)."""
    return {
        name
        for name, _ in inspect.getmembers(client, inspect.ismethod)
        if not name.startswith("_") and not name.endswith(("_with_http_info", "_without_preload_content"))
    }


def call(client, name: str, expect: int, **kwargs):
    """Calls one operation with its HTTP details; records a failure unless it answers `expect`."""
    called.add(name)
    try:
        res = getattr(client, f"{name}_with_http_info")(**kwargs)
    except Exception as err:  # the generated client raises ApiException subclasses on 4xx/5xx
        failures.append(f"{name}: expected {expect}, raised {type(err).__name__}: {str(err)[:300]}")
        return None
    if res.status_code != expect or res.data is None:
        failures.append(
            f"{name}: expected {expect} with a body, got {res.status_code} {res.raw_data[:300]!r}"
        )
        return None
    return res


def status_of(job) -> str:
    return getattr(job.status, "value", job.status)


def document(path: str) -> dict:
    with urllib.request.urlopen(base + path, timeout=30) as r:
        return json.load(r)


def poll(root, job_id: str) -> str:
    """Polls the job (get_job) until it has finished; its final status, or 'timeout'."""
    deadline = time.monotonic() + POLL_DEADLINE_S
    while time.monotonic() < deadline:
        res = call(root, "get_job_v1_jobs_job_id_get", 200, job_id=job_id)
        if res is None:
            return "unreadable"
        if status_of(res.data) in FINISHED:
            return status_of(res.data)
        time.sleep(0.05)
    return "timeout"


def settle(root) -> None:
    """Waits until no job is queued or running (the other clients' checks may have left some), so
    no artifact appears while the file list is paged."""
    job_status = importlib.import_module("kiapi_og_root.models").JobStatus
    deadline = time.monotonic() + POLL_DEADLINE_S
    while time.monotonic() < deadline:
        busy = [call(root, "list_jobs_v1_jobs_get", 200, status=job_status(s)) for s in ("queued", "running")]
        if any(res is None for res in busy):
            return  # the failure is recorded; polling on would only repeat it
        if not any(res.data.data for res in busy):
            return
        time.sleep(0.05)
    failures.append("jobs were still queued or running after the deadline")


def check_files(root) -> str:
    """Upload, paging, filters and download; returns the id of one uploaded file."""
    settle(root)
    uploaded = []
    for i in range(3):
        res = call(root, "upload_file_v1_files_post", 200, file=(f"in{i}.png", PNG))
        if res is not None:
            uploaded.append(res.data.file_id)
    if len(uploaded) != 3:
        return uploaded[0] if uploaded else ""
    file_id = uploaded[0]
    call(root, "get_file_v1_files_file_id_get", 200, file_id=file_id)

    # Paging: two records a page, forwards with after while has_more, as the whole list has them.
    whole = call(root, "list_files_v1_files_get", 200)
    walked, after = [], None
    for _ in range(1000):
        page = call(root, "list_files_v1_files_get", 200, limit=2, **({"after": after} if after else {}))
        if page is None:
            break
        walked += [f.file_id for f in page.data.data]
        if not page.data.has_more:
            break
        after = page.data.last_id
    if whole is not None and walked != [f.file_id for f in whole.data.data]:
        failures.append(
            f"list_files paging: walked {walked}, the whole list is {[f.file_id for f in whole.data.data]}"
        )
    if walked[:3] != uploaded[::-1]:
        failures.append(f"list_files paging: expected the uploads first, newest first; got {walked[:3]}")
    pngs = call(root, "list_files_v1_files_get", 200, content_type="image/png", limit=1000)
    if pngs is not None:
        listed = pngs.data.data
        if not set(uploaded) <= {f.file_id for f in listed} or any(
            f.content_type != "image/png" for f in listed
        ):
            failures.append(
                f"list_files content_type=image/png: got {[(f.file_id, f.content_type) for f in listed]}"
            )

    downloaded = call(root, "download_file_v1_files_file_id_download_get", 200, file_id=file_id)
    if downloaded is not None and bytes(downloaded.data) != PNG:
        failures.append(f"download: {len(downloaded.data)} bytes that differ from the {len(PNG)} uploaded")
    thumb = call(root, "file_thumbnail_v1_files_file_id_thumbnail_get", 200, file_id=file_id, size=64)
    if thumb is not None and bytes(thumb.data)[8:12] != b"WEBP":
        failures.append(f"thumbnail: not a WebP ({bytes(thumb.data)[:16]!r})")
    return file_id


def check_family(root, family: str) -> list[str]:
    """Every generation operation of the family: sync JSON, then async with an unknown field, polled.
    Returns the ids of the jobs that succeeded."""
    succeeded = []
    package = f"kiapi_og_{family}"
    client = api(package)
    models = importlib.import_module(f"{package}.models")
    call(client, f"list_models_v1_image_{family}_models_get", 200)
    for _path, item in document(f"/v1/image/{family}/openapi.json")["paths"].items():
        op = item.get("post")
        if not op:
            continue
        name = op["operationId"]
        example = op["requestBody"]["content"]["application/json"]["example"]
        method = getattr(client, f"{name}_with_http_info")
        param = next(iter(inspect.signature(method).parameters.values()))
        model = param.annotation
        if isinstance(model, str):  # postponed annotations: resolve among the generated models
            model = getattr(models, model)
        if "202" not in op["responses"]:
            # Not a generation (the caption check): answered at once, no job; its example passes.
            verdict = call(client, name, 200, **{param.name: model.from_dict(example)})
            if verdict is not None and not verdict.data.valid:
                failures.append(f"{name}: the document's example is not valid: {verdict.data.problems}")
            continue

        sync = call(client, name, 200, **{param.name: model.from_dict(example)}, accept="application/json")
        if sync is not None and status_of(sync.data) != "succeeded":
            failures.append(f"{name} sync: job {status_of(sync.data)}")

        # An unknown field: accepted, reported in the documented Warning header, and the job runs.
        body = model.from_dict({**example, "mode": "async", "colour": "red"})
        accepted = call(client, name, 202, **{param.name: body})
        if accepted is None:
            continue
        warning = accepted.headers.get("warning") if accepted.headers else None
        if not warning or "unknown field 'colour' ignored" not in warning:
            failures.append(f"{name} async: expected a Warning header about 'colour', got {warning!r}")
        job_id = accepted.data.job_id
        final = poll(root, job_id)
        if final != "succeeded":
            failures.append(f"{name} async job {job_id}: {final}")
            continue
        succeeded.append(job_id)
        artifacts = call(root, "list_files_v1_files_get", 200, job_id=job_id)
        if artifacts is None or len(artifacts.data.data) != 1:
            failures.append(f"{name}: list_files(job_id=…) should give the job's one artifact")
            continue
        image = call(
            root, "download_file_v1_files_file_id_download_get", 200, file_id=artifacts.data.data[0].file_id
        )
        if image is not None and not bytes(image.data).startswith(IMAGE_MAGIC):
            failures.append(f"{name}: the artifact download is not an image ({bytes(image.data)[:16]!r})")
    return succeeded


def check_events(root, job_id: str) -> None:
    """The event streams (text/event-stream): a finished job's is its terminal event, then the end;
    the all-jobs stream never ends, so only its opening is read (the client's unread response)."""
    events = call(root, "job_events_v1_jobs_job_id_events_get", 200, job_id=job_id)
    if events is not None and "event: succeeded" not in events.data:
        failures.append(f"job events: no succeeded event in {events.data[:300]!r}")
    called.add("all_events_v1_events_get")
    stream = root.all_events_v1_events_get_without_preload_content(status="succeeded")
    try:
        if stream.status != 200 or not stream.headers.get("content-type", "").startswith("text/event-stream"):
            failures.append(f"all events: {stream.status} {stream.headers.get('content-type')}")
    finally:
        stream.close()  # never drained: the stream would not end


def check_openai(root, anonymous) -> None:
    """The OpenAI image routes: a generation, an edit, the refused variation, one model."""
    models = importlib.import_module("kiapi_og_root.models")
    request = models.OpenAIImageGenerationRequest.from_dict({"prompt": "a kite", "size": "64x64", "steps": 2})
    generated = call(
        root, "openai_create_image_v1_images_generations_post", 200, open_ai_image_generation_request=request
    )
    images = generated.data.data if generated is not None else []
    if generated is not None and not images:
        failures.append("openai generation: no image in the answer")
    image = base64.b64decode(images[0].b64_json) if images else b""
    if image:
        call(
            root,
            "openai_create_image_edit_v1_images_edits_post",
            200,
            image=("kite.png", image),
            prompt="make it night",
            size="64x64",
        )
    called.add("openai_create_image_variation_v1_images_variations_post")
    try:
        root.openai_create_image_variation_v1_images_variations_post()
        failures.append("openai variation: expected 400, it succeeded")
    except Exception as err:
        if getattr(err, "status", None) != 400:
            failures.append(f"openai variation: expected 400, got {err!r}")
    call(anonymous, "retrieve_model_v1_models_model_get", 200, model="qwen-image")


def main() -> int:
    root = api("kiapi_og_root")
    anonymous = api("kiapi_og_root", authenticated=False)

    # HealthResponse.relay is always null: typed as a nullable object so this client can read it.
    health = call(anonymous, "health_health_get", 200)
    if health is not None and (health.data.relay is not None or health.data.status != "ok"):
        failures.append(f"health: expected status ok and relay None, got {health.data!r}")
    call(anonymous, "list_models_v1_models_get", 200)
    try:
        anonymous.list_files_v1_files_get()
        failures.append("list_files without a token: expected 401, it succeeded")
    except Exception as err:
        if getattr(err, "status", None) != 401:
            failures.append(f"list_files without a token: expected 401, got {err!r}")

    file_id = check_files(root)
    finished = []
    for family in ("qwen", "ideogram4"):
        finished += check_family(root, family)
    if finished:
        check_events(root, finished[0])
    check_openai(root, anonymous)

    succeeded = importlib.import_module("kiapi_og_root.models").JobStatus("succeeded")
    listed = call(root, "list_jobs_v1_jobs_get", 200, limit=5, status=succeeded)
    if listed is not None and (
        not listed.data.data or any(status_of(j) != "succeeded" for j in listed.data.data)
    ):
        failures.append(f"list_jobs status=succeeded: got {[status_of(j) for j in listed.data.data]}")
    # A rerun of a finished job from its reproducibility record, async (the sync answer is the image).
    if finished:
        rerun = importlib.import_module("kiapi_og_root.models").RerunRequest.from_dict({"mode": "async"})
        call(root, "rerun_job_v1_jobs_job_id_rerun_post", 202, job_id=finished[0], rerun_request=rerun)
    # Cancel a job that is still running: many steps on a preview engine that sleeps per step.
    qwen = api("kiapi_og_qwen")
    slow = importlib.import_module("kiapi_og_qwen.models").GenerateRequest.from_dict(
        {"prompt": "a slow one", "width": 64, "height": 64, "steps": 100, "mode": "async"}
    )
    accepted = call(qwen, "generate_qwen_endpoint_v1_image_qwen_generate_post", 202, generate_request=slow)
    if accepted is not None:
        canceled = call(root, "cancel_job_v1_jobs_job_id_cancel_post", 200, job_id=accepted.data.job_id)
        if canceled is not None and status_of(canceled.data) not in ("running", "queued", "canceled"):
            failures.append(f"cancel: job {status_of(canceled.data)}")
        if poll(root, accepted.data.job_id) != "canceled":
            failures.append("cancel: the job did not end canceled")
        call(root, "delete_job_v1_jobs_job_id_delete", 200, job_id=accepted.data.job_id)
    if file_id:
        call(root, "delete_file_v1_files_file_id_delete", 200, file_id=file_id)

    for package in ("kiapi_og_root", "kiapi_og_qwen", "kiapi_og_ideogram4"):
        for name in sorted(operations(api(package)) - called):
            failures.append(f"{package}: operation {name} was never called")
    for f in failures:
        print(f"openapi-generator-client: FAIL {f}")
    print(f"openapi-generator-client: {len(called)} operations called, {len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    started = time.monotonic()
    code = main()
    print(f"openapi-generator-client: {time.monotonic() - started:.1f} s")
    sys.exit(code)
