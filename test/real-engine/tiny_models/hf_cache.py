"""Put a checkpoint directory into a Hugging Face hub cache, laid out as huggingface_hub lays it out.

``<cache>/models--<org>--<name>/`` holds ``blobs/<etag>`` (the file contents, named by their ETag on
the Hub: the sha256 of an LFS file, the git blob sha1 of any other file), ``snapshots/<commit>/<path>``
(relative symlinks into ``blobs``, one tree per commit) and ``refs/<branch>`` (the commit a branch
name resolves to). With that, ``snapshot_download(..., local_files_only=True)``, ``HF_HUB_OFFLINE=1``
and mflux's own cache lookups find the model exactly as they would after a real download.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

# The file kinds the Hub stores in LFS (the .gitattributes the tiny repos carry says the same).
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf", ".msgpack", ".onnx", ".model")
LFS_NAMES = ("tokenizer.json",)
GITATTRIBUTES = "".join(
    f"*{suffix} filter=lfs diff=lfs merge=lfs -text\n" for suffix in LFS_SUFFIXES
) + "".join(f"{name} filter=lfs diff=lfs merge=lfs -text\n" for name in LFS_NAMES)


def repo_folder_name(repo_id: str) -> str:
    return "models--" + repo_id.replace("/", "--")


def is_lfs(relative_path: str) -> bool:
    name = relative_path.rsplit("/", 1)[-1]
    return name in LFS_NAMES or name.endswith(LFS_SUFFIXES)


def etag(relative_path: str, data: bytes) -> str:
    """The blob name the Hub would give this file: LFS sha256, else the git blob id."""
    if is_lfs(relative_path):
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _files(root: Path) -> Iterator[tuple[str, Path]]:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            yield path.relative_to(root).as_posix(), path


def place_in_cache(source: Path, hub_cache: Path, repo_id: str, revision: str, branch: str = "main") -> Path:
    """Copy every file under ``source`` into the cache as ``repo_id`` at commit ``revision``.

    Returns the snapshot directory. An existing snapshot of that commit is replaced whole (so a
    rebuild with another seed leaves no file of the old one behind); blobs are content-addressed
    and written only when missing. ``refs/<branch>`` is written last, as huggingface_hub's
    downloads do, so the branch never names a half-written snapshot.
    """
    if len(revision) != 40 or any(c not in "0123456789abcdef" for c in revision):
        raise ValueError(f"revision must be a 40-hex commit id, got {revision!r}")
    folder = Path(hub_cache) / repo_folder_name(repo_id)
    blobs = folder / "blobs"
    snapshot = folder / "snapshots" / revision
    blobs.mkdir(parents=True, exist_ok=True)
    if snapshot.exists():
        shutil.rmtree(snapshot)
    for relative, path in _files(Path(source)):
        data = path.read_bytes()
        blob = blobs / etag(relative, data)
        if not blob.exists():
            # Write beside the blob and rename: a concurrent reader never sees a partial blob.
            fd, partial = tempfile.mkstemp(dir=blobs, prefix=".partial-")
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(partial, blob)
        pointer = snapshot / relative
        pointer.parent.mkdir(parents=True, exist_ok=True)
        # Relative like huggingface_hub's: snapshots/<rev>/<a>/<b> -> ../../../blobs/<etag>
        pointer.symlink_to(os.path.relpath(blob, pointer.parent))
    refs = folder / "refs"
    refs.mkdir(exist_ok=True)
    (refs / branch).write_text(revision, encoding="ascii")
    return snapshot
