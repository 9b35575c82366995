"""Makes and checks the engine locks (``worker/locks/<flavour>.txt``) with pip's own resolver.

    python worker/locks/lockgen.py update            # rewrite every lock (worker/locks/update.sh)
    python worker/locks/lockgen.py check FLAVOUR PY  # dry-run install of a lock for that target

Each lock is resolved for its target machine from any machine: ``pip install --dry-run
--ignore-installed --report --only-binary=:all: --platform ... --python-version ...``. pip picks
wheels for ``--platform`` but evaluates environment markers (``sys_platform == 'darwin'``,
``platform_system == "Linux" and extra == "cuda13"``) against the Python running it, so pip runs
here in a child process whose marker environment is the target's (``_pip_child``). Nothing else of
pip is changed. Needs pip >= 23 (the tools venv pins it) and PyPI.

The input is mflux's own requirements (read from the release's metadata by a ``--no-deps`` dry run)
without ``pins.UNLOCKED_DEPENDENCIES`` (torch) and with the flavour's MLX extra, plus what the worker
needs itself (huggingface_hub). mflux is then added at its pinned version: it is installed with
``--no-deps``, so its torch requirement is never resolved.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from kiapi_worker import pins  # noqa: E402

INDEX_URL = os.environ.get("KIAPI_LOCK_INDEX_URL", "https://pypi.org/simple")

# Wheel platforms per flavour: the oldest machine each target supports and every older tag it
# accepts (pip does not widen an explicit --platform), so the lock installs on all newer ones.
# MLX's Linux wheels need glibc 2.35; its macOS wheels start at macOS 14.
TARGETS: dict[str, dict[str, object]] = {
    "metal": {
        "platforms": [f"macosx_{v}_0_arm64" for v in range(14, 10, -1)],
        "markers": {
            "sys_platform": "darwin",
            "platform_system": "Darwin",
            "platform_machine": "arm64",
            "os_name": "posix",
            "platform_release": "23.0.0",
            "platform_version": "Darwin Kernel Version 23.0.0",
        },
    },
    "cuda13": {
        "platforms": [f"manylinux_2_{v}_x86_64" for v in range(35, 16, -1)] + ["manylinux2014_x86_64"],
        "markers": {
            "sys_platform": "linux",
            "platform_system": "Linux",
            "platform_machine": "x86_64",
            "os_name": "posix",
            "platform_release": "6.8.0",
            "platform_version": "#1 SMP",
        },
    },
}
TARGETS["cpu"] = TARGETS["cuda13"]

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*(.*)$")


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def marker_environment(flavour: str, python: str) -> dict[str, str]:
    """The PEP 508 marker values of a CPython ``python`` (``3.11``) on the flavour's machine."""
    major, minor = python.split(".")
    env = {
        "implementation_name": "cpython",
        "implementation_version": f"{major}.{minor}.0",
        "platform_python_implementation": "CPython",
        "python_version": f"{major}.{minor}",
        "python_full_version": f"{major}.{minor}.0",
    }
    env.update(TARGETS[flavour]["markers"])  # type: ignore[arg-type]
    return env


def _pip_child() -> int:
    """Runs pip with the marker environment from KIAPI_LOCK_MARKERS (argv: pip's arguments)."""
    import pip._vendor.packaging.markers as markers

    target = json.loads(os.environ["KIAPI_LOCK_MARKERS"])
    host = markers.default_environment

    def default_environment() -> dict[str, str]:
        return {**host(), **target}

    markers.default_environment = default_environment
    from pip._internal.cli.main import main

    return main(sys.argv[2:])


def pip_dry_run(flavour: str, python: str, args: list[str], python_exe: str = sys.executable) -> dict:
    """``pip install --dry-run --report`` for the target; returns the report (raises on failure)."""
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "report.json"
        command = [
            python_exe,
            str(Path(__file__).resolve()),
            "_pip",
            "install",
            "--dry-run",
            "--ignore-installed",
            "--quiet",
            "--disable-pip-version-check",
            "--no-input",
            "--report",
            str(report),
            "--only-binary=:all:",
            # Metadata by HTTP range requests: the CUDA wheels (mlx-cuda-13, nvidia-*, ~2 GB) publish
            # no separate metadata file, and pip would download each in full otherwise.
            "--use-feature=fast-deps",
            "--python-version",
            python,
            "--implementation",
            "cp",
            "--index-url",
            INDEX_URL,
        ]
        for platform in TARGETS[flavour]["platforms"]:  # type: ignore[union-attr]
            command += ["--platform", str(platform)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") or k in ("PIP_CERT",)}
        env["KIAPI_LOCK_MARKERS"] = json.dumps(marker_environment(flavour, python))
        env["PIP_CONFIG_FILE"] = os.devnull  # only what is said here: no find-links, no other index
        done = subprocess.run(
            command + args, capture_output=True, text=True, env=env, timeout=600, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"pip could not resolve for {flavour} / Python {python}:\n$ {' '.join(command + args)}\n"
                f"{done.stdout}\n{done.stderr}"
            )
        return json.loads(report.read_text(encoding="utf-8"))


def resolved(report: dict) -> dict[str, str]:
    """name -> version of every package a report would install."""
    return {
        normalize(item["metadata"]["name"]): item["metadata"]["version"] for item in report.get("install", [])
    }


def mflux_requirements() -> list[str]:
    """mflux's Requires-Dist, from its release's metadata (a --no-deps dry run; no download)."""
    report = pip_dry_run("cuda13", pins.LOCK_PYTHONS[0], ["--no-deps", pins.MFLUX_REQUIREMENT])
    (item,) = report["install"]
    return list(item["metadata"].get("requires_dist", []))


def lock_input(flavour: str, requires: list[str]) -> list[str]:
    """What is resolved for a flavour: mflux's requirements minus the unlocked ones, MLX with the
    flavour's extra, plus the worker's own needs."""
    unlocked = {normalize(name) for name in pins.UNLOCKED_DEPENDENCIES}
    out: list[str] = []
    for requirement in requires:
        match = _NAME.match(requirement)
        if not match:
            raise ValueError(f"cannot read mflux requirement {requirement!r}")
        name, _extras, rest = match.groups()
        if normalize(name) in unlocked:
            continue
        if normalize(name) == "mlx":
            out.append(f"mlx{rest}")  # mflux's version range and marker, without its extra
            continue
        out.append(requirement)
    out.append(pins.FLAVOURS[flavour]["mlx"])
    out.append(pins.HUGGINGFACE_HUB_REQUIREMENT)
    out.extend(pins.UNDECLARED_RUNTIME_REQUIREMENTS)
    return out


def _marker(pythons: list[str]) -> str:
    if len(pythons) == 1:
        return f'python_version == "{pythons[0]}"'
    return " or ".join(f'python_version == "{p}"' for p in pythons)


def render_lock(flavour: str, per_python: dict[str, dict[str, str]], requires: list[str]) -> str:
    pythons = list(per_python)
    names = sorted({name for versions in per_python.values() for name in versions})
    lines = []
    for name in names:
        by_version: dict[str, list[str]] = {}
        for python in pythons:
            version = per_python[python].get(name)
            if version is not None:
                by_version.setdefault(version, []).append(python)
        for version, where in sorted(by_version.items()):
            lines.append(
                f"{name}=={version}" if where == pythons else f"{name}=={version} ; {_marker(where)}"
            )
    flavour_data = pins.FLAVOURS[flavour]
    header = [
        f"# kiapi engine lock: flavour {flavour} ({flavour_data['platform']}), "
        f"Python {', '.join(pythons)}; wheels for {TARGETS[flavour]['platforms'][0]} and older tags.",  # type: ignore[index]
        "# Generated by worker/locks/update.sh (lockgen.py: pip's resolver) from",
        "# worker/kiapi_worker/pins.py; do not edit by hand.",
        "#",
        f"# Every package of the engine at an exact version: {pins.MFLUX_REQUIREMENT}, {flavour_data['mlx']} "
        "and their dependencies,",
        "# plus huggingface_hub for kiapi's downloads and jinja2 (needed by mflux, undeclared: pins.py).",
        "# kiapi activate installs it with",
        "#   pip install --no-deps --only-binary=:all: -r <this file>",
        "#   pip install -c <this file> worker/",
        "# so an install today and in a year gives the same set.",
        "#",
        f"# Not in the lock: {', '.join(pins.UNLOCKED_DEPENDENCIES)}. mflux declares it, but nothing the",
        "# worker runs imports it (mflux imports without it; only mflux's conversion tools use it) and on",
        "# Linux it pulls several GB of CUDA wheels. Because pip would otherwise add it, mflux is installed",
        "# with --no-deps: that is why this file must be (and is tested to be) complete on its own.",
        "# A machine that wants torch can install it into the venv afterwards.",
        "#",
        "# Resolved from: " + "; ".join(lock_input(flavour, requires)),
        "",
    ]
    return "\n".join(header + lines + [f"{pins.MFLUX_REQUIREMENT}", ""])


def update(pythons: list[str] | None = None) -> list[Path]:
    requires = mflux_requirements()
    written = []
    for flavour, data in pins.FLAVOURS.items():
        per_python = {}
        for python in pythons or list(pins.LOCK_PYTHONS):
            report = pip_dry_run(flavour, python, lock_input(flavour, requires))
            per_python[python] = resolved(report)
            print(
                f"lockgen: {flavour} / Python {python}: {len(per_python[python])} packages", file=sys.stderr
            )
        path = pins.LOCK_DIR / data["lock"]
        path.write_text(render_lock(flavour, per_python, requires), encoding="utf-8")
        written.append(path)
    return written


def read_lock(path: Path, python: str) -> dict[str, str]:
    """name -> version of the lock's entries that apply to ``python`` (its markers are only
    ``python_version == "X.Y"`` alternatives)."""
    out: dict[str, str] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        requirement, _, marker = (part.strip() for part in line.partition(";"))
        if marker and python not in re.findall(r'python_version == "([0-9.]+)"', marker):
            continue
        name, _, version = requirement.partition("==")
        out[normalize(name)] = version
    return out


def check(flavour: str, python: str, python_exe: str = sys.executable, path: Path | None = None) -> list[str]:
    """Installs the lock for its target in a dry run the way kiapi activate does (``--no-deps -r``;
    pip fails when a pinned version has no wheel for that Python and platform), then checks from
    pip's report that the lock is complete: every dependency of every locked package (markers
    evaluated for the target, extras followed) is locked at a version it accepts. Returns the
    problems (empty: the lock installs and is complete). Raises when pip cannot install it."""
    from pip._vendor.packaging.requirements import Requirement

    path = path or pins.LOCK_DIR / pins.FLAVOURS[flavour]["lock"]
    locked = read_lock(path, python)
    report = pip_dry_run(flavour, python, ["--no-deps", "-r", str(path)], python_exe)
    installed = resolved(report)
    problems = [
        f"pip would install {name}=={version}, the lock says {locked.get(name)}"
        for name, version in installed.items()
        if locked.get(name) != version
    ]
    problems += [f"{name} is locked but pip would not install it" for name in locked if name not in installed]
    metadata = {normalize(item["metadata"]["name"]): item["metadata"] for item in report.get("install", [])}
    env = marker_environment(flavour, python)
    top = Requirement(pins.FLAVOURS[flavour]["mlx"])
    extras: dict[str, set[str]] = {normalize(top.name): set(top.extras)}
    unlocked = {normalize(name) for name in pins.UNLOCKED_DEPENDENCIES}
    changed = True
    while changed:
        changed = False
        for name, meta in metadata.items():
            for text in meta.get("requires_dist", []):
                requirement = Requirement(text)
                wanted = {""} | extras.get(name, set())
                if requirement.marker and not any(
                    requirement.marker.evaluate({**env, "extra": extra}) for extra in wanted
                ):
                    continue
                dependency = normalize(requirement.name)
                if name == "mflux" and dependency in unlocked:
                    continue
                # The flavour picks MLX's backend extra, not mflux (see lock_input).
                requested = set() if (name, dependency) == ("mflux", "mlx") else set(requirement.extras)
                new = requested - extras.get(dependency, set())
                if new:
                    extras.setdefault(dependency, set()).update(new)
                    changed = True
                version = locked.get(dependency)
                problem = (
                    f"{name} needs {text}, which the lock does not hold"
                    if version is None
                    else f"{name} needs {text}, the lock has {dependency}=={version}"
                    if not requirement.specifier.contains(version, prereleases=True)
                    else None
                )
                if problem and problem not in problems:
                    problems.append(problem)
    return problems


def main(argv: list[str]) -> int:
    if argv[:1] == ["_pip"]:
        return _pip_child()
    if argv[:1] == ["update"]:
        for path in update(argv[1:] or None):
            print(path)
        return 0
    if len(argv) == 3 and argv[0] == "check":
        problems = check(argv[1], argv[2])
        for problem in problems:
            print(problem)
        return 1 if problems else 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
