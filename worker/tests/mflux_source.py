"""Reads mflux source code without importing it: the pinned sdist from PyPI, or the fake.

Used by the contract test (adapter vs real mflux) and by the fake's signature test (fake vs real).
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from kiapi_worker.pins import MFLUX_REQUIREMENT, MFLUX_VERSION

REPO_ROOT = Path(__file__).resolve().parents[2]
FAKE_DIR = Path(__file__).resolve().parent / "fake_mflux"
_PACKAGE_PREFIX = re.compile(r"^[^/]+/(?:src/)?(?=mflux/)")


def sdist_cache_dir() -> Path:
    root = os.environ.get("KIAPI_TEST_CACHE") or str(REPO_ROOT / ".cache")
    return Path(root) / "mflux-sdist"


def _usable(archive: Path) -> bool:
    try:
        with tarfile.open(archive) as tar:
            return any(name.endswith("mflux/utils/exceptions.py") for name in tar.getnames())
    except (OSError, tarfile.TarError):
        return False


def download_sdist() -> Path:
    """Return the cached sdist, downloading it with pip when missing or unreadable.

    ``--no-binary mflux`` (not ``:all:``) so pip may still use wheels for the build backend it
    runs to read the sdist's metadata; forcing those from source too takes minutes and fails.
    """
    cache = sdist_cache_dir()
    target = cache / f"mflux-{MFLUX_VERSION}.tar.gz"
    if target.exists() and _usable(target):
        return target
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as scratch:
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-binary",
            "mflux",
            "--disable-pip-version-check",
            MFLUX_REQUIREMENT,
            "-d",
            scratch,
        ]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            pytest.fail(f"could not download the {MFLUX_REQUIREMENT} sdist ({exc}); PyPI must be reachable")
        found = sorted(Path(scratch).glob("mflux-*.tar.gz"))
        if done.returncode != 0 or not found:
            pytest.fail(
                f"could not download the {MFLUX_REQUIREMENT} sdist from PyPI (the contract test needs it; "
                f"it is cached in {cache} once fetched).\n$ {' '.join(command)}\n{done.stdout}\n{done.stderr}"
            )
        shutil.move(str(found[0]), target)
    if not _usable(target):
        pytest.fail(f"{target} is not an mflux sdist with mflux/utils/exceptions.py")
    return target


@dataclass(frozen=True)
class Param:
    name: str
    kind: str  # "positional", "keyword_only", "var_positional" or "var_keyword"
    default: str | None  # source text of the default, None when there is none
    annotation: str | None


class MfluxSource:
    """Python files of an ``mflux`` package by path (``mflux/utils/exceptions.py``), parsed on demand."""

    def __init__(self, files: dict[str, str], origin: str, pkg_info: str | None = None) -> None:
        self.files = files
        self.origin = origin
        self.pkg_info = pkg_info
        self._trees: dict[str, ast.Module] = {}

    @classmethod
    def from_sdist(cls, archive: Path) -> MfluxSource:
        files = {}
        pkg_info = None
        with tarfile.open(archive) as tar:
            for member in tar.getmembers():
                if member.name.count("/") == 1 and member.name.endswith("/PKG-INFO"):
                    handle = tar.extractfile(member)
                    pkg_info = handle.read().decode("utf-8") if handle else None
                match = _PACKAGE_PREFIX.match(member.name)
                if match and member.isfile() and member.name.endswith(".py"):
                    handle = tar.extractfile(member)
                    assert handle is not None
                    files[member.name[match.end() :]] = handle.read().decode("utf-8")
        return cls(files, str(archive), pkg_info)

    @classmethod
    def from_directory(cls, root: Path) -> MfluxSource:
        files = {
            path.relative_to(root).as_posix(): path.read_text(encoding="utf-8")
            for path in (root / "mflux").rglob("*.py")
        }
        return cls(files, str(root))

    def module_path(self, module: str) -> str:
        base = module.replace(".", "/")
        for candidate in (f"{base}.py", f"{base}/__init__.py"):
            if candidate in self.files:
                return candidate
        raise AssertionError(
            f"module {module} not found in {self.origin} (looked for {base}.py and __init__.py)"
        )

    def tree(self, path: str) -> ast.Module:
        if path not in self._trees:
            self._trees[path] = ast.parse(self.files[path], filename=path)
        return self._trees[path]

    def find_class(self, module: str, name: str, _depth: int = 0) -> tuple[str, ast.ClassDef]:
        """The class ``module.name`` as an import would find it, following ``from x import name``."""
        assert _depth < 10, f"import chain for {module}.{name} is too deep"
        path = self.module_path(module)
        for node in self.tree(path).body:
            if isinstance(node, ast.ClassDef) and node.name == name:
                return path, node
        for node in self.tree(path).body:
            if not (isinstance(node, ast.ImportFrom) and node.module and node.level == 0):
                continue
            for alias in node.names:
                if (alias.asname or alias.name) == name:
                    return self.find_class(node.module, alias.name, _depth + 1)
        raise AssertionError(f"{module} has no class {name} in {self.origin}")


def method(cls: ast.ClassDef, name: str) -> ast.FunctionDef:
    for node in cls.body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return node
    raise AssertionError(f"class {cls.name} has no method {name}")


def decorator_names(function: ast.FunctionDef) -> list[str]:
    return [ast.unparse(decorator) for decorator in function.decorator_list]


def parameters(function: ast.FunctionDef) -> list[Param]:
    """Parameters after ``self`` with their kind, default and annotation as source text."""
    args = function.args
    positional = args.posonlyargs + args.args
    defaults: list[ast.expr | None] = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
    params = [
        Param(arg.arg, "positional", _text(default), _text(arg.annotation))
        for arg, default in zip(positional, defaults, strict=True)
    ]
    if args.vararg:
        params.append(Param(args.vararg.arg, "var_positional", None, _text(args.vararg.annotation)))
    params += [
        Param(arg.arg, "keyword_only", _text(default), _text(arg.annotation))
        for arg, default in zip(args.kwonlyargs, args.kw_defaults, strict=True)
    ]
    if args.kwarg:
        params.append(Param(args.kwarg.arg, "var_keyword", None, _text(args.kwarg.annotation)))
    if params and params[0].name in ("self", "cls"):
        params = params[1:]
    return params


def _text(node: ast.expr | None) -> str | None:
    return None if node is None else ast.unparse(node)


def load_mflux_source() -> MfluxSource:
    return MfluxSource.from_sdist(download_sdist())


def load_fake_source() -> MfluxSource:
    return MfluxSource.from_directory(FAKE_DIR)
