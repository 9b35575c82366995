"""Calls every operation of the Python clients openapi-python-client generated from kiapi's served
documents, against a live server, and fails unless each answers as its document says.

Run by test/clients/run-clients.sh: argv = base URL, bearer token, folder holding the generated
packages kiapi_root, kiapi_qwen and kiapi_ideogram4. The request bodies of the generation
operations are the documents' own examples (what Swagger UI pre-fills), read back through the
generated models' from_dict, so a model that cannot carry its example fails here too.
"""

import base64
import importlib
import io
import json
import pkgutil
import sys
import time
import urllib.request

base, token, generated = sys.argv[1], sys.argv[2], sys.argv[3]
sys.path.insert(0, generated)

# A 16×16 PNG to upload (what the qwen edit example carries as a data URL).
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAABAAAAAQCAIAAACQkWg2AAAACXBIWXMAAAPoAAAD6AG1e1JrAAAAGUlEQVQokWNwa9pCEmIY1dA0GkpuwzVpAACXG3wQY/W53wAAAABJRU5ErkJggg=="
)

called: set[str] = set()
failures: list[str] = []


def operations(package: str) -> dict[str, object]:
    """Every generated operation module of a package, by module name (the operationId)."""
    api = importlib.import_module(f"{package}.api.default")
    return {m.name: importlib.import_module(f"{package}.api.default.{m.name}") for m in pkgutil.iter_modules(api.__path__)}


def call(ops: dict[str, object], name: str, expect: int, client, **kwargs):
    """Calls one operation; records a failure unless it answers `expect` with a parsed body."""
    called.add(name)
    response = ops[name].sync_detailed(client=client, **kwargs)
    if response.status_code != expect or (expect != 304 and response.parsed is None):
        failures.append(f"{name}: expected {expect}, got {response.status_code} {response.content[:300]!r}")
    return response.parsed


def document(path: str) -> dict:
    with urllib.request.urlopen(base + path, timeout=30) as r:
        return json.load(r)


def main() -> int:
    root = importlib.import_module("kiapi_root")
    client = root.client.AuthenticatedClient(base_url=base, token=token, timeout=120)
    anonymous = root.client.Client(base_url=base, timeout=120)
    types = importlib.import_module("kiapi_root.types")
    models = importlib.import_module("kiapi_root.models")
    ops = operations("kiapi_root")

    health = call(ops, "health_health_get", 200, anonymous)
    if health is not None and health.relay is not None:
        failures.append(f"health relay: expected None, got {health.relay!r}")
    call(ops, "list_models_v1_models_get", 200, anonymous)
    # A protected operation without the token: the documented 401, parsed as the error body.
    denied = ops["list_files_v1_files_get"].sync_detailed(client=anonymous)
    if denied.status_code != 401 or denied.parsed is None:
        failures.append(f"list_files without a token: expected a parsed 401, got {denied.status_code}")

    body = models.UploadFileV1FilesPostBody(file=types.File(payload=io.BytesIO(PNG), file_name="in.png", mime_type="image/png"))
    record = call(ops, "upload_file_v1_files_post", 200, client, body=body)
    file_id = record.file_id
    call(ops, "get_file_v1_files_file_id_get", 200, client, file_id=file_id)
    call(ops, "list_files_v1_files_get", 200, client)
    downloaded = call(ops, "download_file_v1_files_file_id_download_get", 200, client, file_id=file_id)
    if downloaded is not None and downloaded.payload.read() != PNG:
        failures.append("download: the bytes differ from the upload")
    thumb = call(ops, "file_thumbnail_v1_files_file_id_thumbnail_get", 200, client, file_id=file_id, size=64)
    if thumb is not None and thumb.payload.read()[8:12] != b"WEBP":
        failures.append("thumbnail: not a WebP")

    job_ids = []
    for family, package in (("qwen", "kiapi_qwen"), ("ideogram4", "kiapi_ideogram4")):
        fam_client = importlib.import_module(f"{package}.client").AuthenticatedClient(base_url=base, token=token, timeout=120)
        fam_ops = operations(package)
        doc = document(f"/v1/image/{family}/openapi.json")
        call(fam_ops, f"list_models_v1_image_{family}_models_get", 200, fam_client)
        for path, item in doc["paths"].items():
            op = item.get("post")
            if not op:
                continue
            name = op["operationId"]
            example = op["requestBody"]["content"]["application/json"]["example"]
            model = fam_ops[name].sync_detailed.__annotations__["body"]
            if isinstance(model, str):  # postponed annotations: resolve in the module
                model = getattr(fam_ops[name], model)
            if "202" not in op["responses"]:
                # Not a generation (the caption check): answered at once, no job; its example passes.
                verdict = call(fam_ops, name, 200, fam_client, body=model.from_dict(example))
                if verdict is not None and not verdict.valid:
                    failures.append(f"{name}: the document's example is not valid: {verdict.problems}")
                continue
            job = call(fam_ops, name, 200, fam_client, body=model.from_dict(example), accept="application/json")
            if job is not None:
                if job.status.value != "succeeded":
                    failures.append(f"{name}: job {job.status.value}")
                job_ids.append(job.id)
            accepted = call(fam_ops, name, 202, fam_client, body=model.from_dict({**example, "mode": "async"}))
            if accepted is not None:
                job_ids.append(accepted.job_id)

    # The OpenAI-compatible routes as a generated client sees them (the SDKs have their own check).
    generation = models.OpenAIImageGenerationRequest.from_dict({"prompt": "a kite", "size": "64x64", "steps": 2})
    call(ops, "openai_create_image_v1_images_generations_post", 200, client, body=generation)
    edit = models.OpenaiCreateImageEditV1ImagesEditsPostBody(
        image=types.File(payload=io.BytesIO(PNG), file_name="in.png", mime_type="image/png"), prompt="make it blue", size="64x64", steps=2
    )
    call(ops, "openai_create_image_edit_v1_images_edits_post", 200, client, body=edit)
    call(ops, "openai_create_image_variation_v1_images_variations_post", 400, client)
    call(ops, "retrieve_model_v1_models_model_get", 200, anonymous, model="qwen-image")

    call(ops, "list_jobs_v1_jobs_get", 200, client)
    call(ops, "get_job_v1_jobs_job_id_get", 200, client, job_id=job_ids[0])
    # The event streams (text/event-stream): a finished job's is its terminal event, then the end;
    # the all-jobs stream never ends, so only its opening is read, sent as the generated module
    # builds the request.
    events = call(ops, "job_events_v1_jobs_job_id_events_get", 200, client, job_id=job_ids[0])
    if events is not None and "event: succeeded" not in events:
        failures.append(f"job events: no succeeded event in {events[:300]!r}")
    called.add("all_events_v1_events_get")
    request = ops["all_events_v1_events_get"]._get_kwargs(status="succeeded")
    with client.get_httpx_client().stream(**request) as stream:
        if stream.status_code != 200 or not stream.headers.get("content-type", "").startswith("text/event-stream"):
            failures.append(f"all events: {stream.status_code} {stream.headers.get('content-type')}")
    # A rerun of the finished job from its reproducibility record, async (the sync answer is the image).
    rerun = models.RerunRequest.from_dict({"mode": "async"})
    call(ops, "rerun_job_v1_jobs_job_id_rerun_post", 202, client, job_id=job_ids[0], body=rerun)
    # A job that is still running when canceled: many steps on a preview engine that sleeps per step.
    qwen_ops = operations("kiapi_qwen")
    qwen = importlib.import_module("kiapi_qwen")
    qwen_client = qwen.client.AuthenticatedClient(base_url=base, token=token, timeout=120)
    slow = importlib.import_module("kiapi_qwen.models").GenerateRequest.from_dict(
        {"prompt": "a slow one", "width": 64, "height": 64, "steps": 100, "mode": "async"}
    )
    accepted = call(qwen_ops, "generate_qwen_endpoint_v1_image_qwen_generate_post", 202, qwen_client, body=slow)
    canceled = call(ops, "cancel_job_v1_jobs_job_id_cancel_post", 200, client, job_id=accepted.job_id)
    if canceled is not None and canceled.status.value not in ("running", "queued", "canceled"):
        failures.append(f"cancel: job {canceled.status.value}")
    call(ops, "delete_job_v1_jobs_job_id_delete", 200, client, job_id=accepted.job_id)
    call(ops, "delete_file_v1_files_file_id_delete", 200, client, file_id=file_id)

    for package in ("kiapi_root", "kiapi_qwen", "kiapi_ideogram4"):
        for name in operations(package):
            if name not in called:
                failures.append(f"{package}: operation {name} was never called")
    for f in failures:
        print(f"python-client: FAIL {f}")
    print(f"python-client: {len(called)} operations called, {len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    started = time.monotonic()
    code = main()
    print(f"python-client: {time.monotonic() - started:.1f} s")
    sys.exit(code)
