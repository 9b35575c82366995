"""``python -m tiny_models build --hub-cache DIR [--seed N]`` and ``python -m tiny_models lora ...``.

Each prints one JSON line describing what it wrote (and nothing else on stdout), so a test harness
can read the repos, revisions and snapshot paths from it.

Model modules follow one convention: ``build(hub_cache: Path, seed: int)`` returns
``{"repo", "revision", "snapshot"}`` or a list of them. ``tiny_models.qwen`` always runs;
``tiny_models.ideogram4`` runs when it exists and has ``build``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tiny_models import loras, qwen

OPTIONAL_MODEL_MODULES = ("tiny_models.ideogram4",)


def _builders() -> list[tuple[str, Callable[[Path, int], Any]]]:
    builders: list[tuple[str, Callable[[Path, int], Any]]] = [("qwen", qwen.build)]
    for module_name in OPTIONAL_MODEL_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise  # the module exists but one of its imports is missing: say so
            continue
        build = getattr(module, "build", None)
        if callable(build):
            builders.append((module_name.rsplit(".", 1)[-1], build))
    return builders


def build_all(hub_cache: Path, seed: int) -> dict[str, Any]:
    models: list[dict[str, Any]] = []
    timings: dict[str, float] = {}
    started = time.perf_counter()
    for name, build in _builders():
        begun = time.perf_counter()
        result = build(hub_cache, seed)
        timings[name] = round(time.perf_counter() - begun, 2)
        models.extend(result if isinstance(result, list) else [result])
    return {
        "hub_cache": str(hub_cache),
        "seed": seed,
        "models": models,
        "build_s": round(time.perf_counter() - started, 2),
        "build_s_by_module": timings,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tiny_models", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="write every tiny model into a Hugging Face hub cache")
    build.add_argument("--hub-cache", type=Path, required=True, help="the HF_HUB_CACHE directory")
    build.add_argument("--seed", type=int, default=0)
    lora = commands.add_parser("lora", help="write a tiny Qwen-Image LoRA safetensors file")
    lora.add_argument("--out", type=Path, required=True, help="file to write (end it in .safetensors)")
    lora.add_argument("--seed", type=int, default=0)
    lora.add_argument("--rank", type=int, default=4)
    lora.add_argument("--style", choices=loras.STYLES, default="comfy")
    lora.add_argument("--no-match", action="store_true", help="names no Qwen layer has (an error case)")
    args = parser.parse_args(argv)

    if args.command == "build":
        report = build_all(args.hub_cache.resolve(), args.seed)
    else:
        path = loras.make_qwen_lora(
            args.out.resolve(), args.seed, args.rank, style=args.style, no_match=args.no_match
        )
        report = {
            "path": str(path),
            "seed": args.seed,
            "rank": args.rank,
            "style": args.style,
            "no_match": args.no_match,
        }
    sys.stdout.write(json.dumps(report) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
