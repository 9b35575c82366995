#!/usr/bin/env python3
"""Fake `launchctl` and `systemctl --user` for the `kiapi service` tests, where no launchd or
systemd user manager runs.

Each is a stand-in that behaves as the real tool does for the commands kiapi uses: the same
arguments, exit codes and answers (`launchctl print` exits 113 for a service it does not know,
`systemctl is-active` prints active/inactive/failed and exits 3 unless active, ...). Both read
the service file the way their manager does, with independent parsers (Python's plistlib for the
plist; systemd's quoting rules, by shlex, for the unit), and really run what it says: the program
with its arguments, environment, working directory and log file, so a test talks to a real
`kiapi run` over HTTP. A small supervisor process per service waits for the program and records
its exit status, as the manager would.

State lives in $FAKE_SERVICE_STATE; every call is appended to calls.jsonl there.
Usage: fake_service_manager.py launchctl|systemctl ARGS...
(and internally: supervise DIR, unload DIR TIMEOUT)
"""

import contextlib
import json
import os
import plistlib
import re
import shlex
import signal
import subprocess
import sys
import time

STATE = os.environ.get("FAKE_SERVICE_STATE") or sys.exit("FAKE_SERVICE_STATE is not set")


def out(text):
    sys.stdout.write(text + "\n")


def err(text):
    sys.stderr.write(text + "\n")


def service_dir(manager, name):
    d = os.path.join(STATE, manager, name)
    os.makedirs(d, exist_ok=True)
    return d


def read(path, default=None):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        return default


def write(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def alive(pid):
    """A process that runs (a zombie does not: it has exited and waits to be reaped)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def running_pid(d):
    pid = read(os.path.join(d, "pid"))
    return int(pid) if pid and alive(int(pid)) else None


# --- running a program, as a manager does -------------------------------------------------------


def spawn(d, job):
    """Starts the supervisor for `job` and returns once the program runs (or could not start)."""
    for name in ("pid", "exit", "spawn-error"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(d, name))
    write(os.path.join(d, "job.json"), json.dumps(job))
    subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "supervise", d],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env=os.environ.copy(),
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if os.path.exists(os.path.join(d, "pid")) or os.path.exists(os.path.join(d, "spawn-error")):
            break
        time.sleep(0.02)
    return read(os.path.join(d, "spawn-error"))


def supervise(d):
    job = json.loads(read(os.path.join(d, "job.json")))
    with open(job["log"] or os.devnull, "ab") as log:
        try:
            child = subprocess.Popen(
                job["argv"], env=job["env"], cwd=job["cwd"], stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
        except OSError as e:
            write(os.path.join(d, "spawn-error"), str(e))
            return
        write(os.path.join(d, "pid"), str(child.pid))
        code = child.wait()
    write(os.path.join(d, "exit"), str(code))
    os.remove(os.path.join(d, "pid"))


def terminate(d, timeout_s):
    """SIGTERM, then SIGKILL after timeout_s; returns when the program has exited."""
    pid = running_pid(d)
    if pid is None:
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while alive(pid):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)
    # The supervisor records the exit status just after.
    deadline = time.monotonic() + 10
    while not os.path.exists(os.path.join(d, "exit")) and time.monotonic() < deadline:
        time.sleep(0.02)


def last_exit(d):
    code = read(os.path.join(d, "exit"))
    return int(code) if code is not None else None


# --- launchctl ----------------------------------------------------------------------------------

LAUNCHD_BASE_ENV = ("HOME", "USER", "LOGNAME", "SHELL", "TMPDIR")


def launchd_target(arg):
    m = re.fullmatch(r"gui/(\d+)/(.+)", arg)
    return (m.group(1), m.group(2)) if m else (None, None)


def launchd_domain_ok(uid):
    return uid == str(os.getuid())


def launchd_run(d, plist):
    env = {k: os.environ[k] for k in LAUNCHD_BASE_ENV if k in os.environ}
    env["PATH"] = "/usr/bin:/bin:/usr/sbin:/sbin"
    env.update(plist.get("EnvironmentVariables", {}))
    job = {
        "argv": plist["ProgramArguments"],
        "env": env,
        "cwd": plist.get("WorkingDirectory", "/"),
        "log": plist.get("StandardOutPath"),
    }
    return spawn(d, job)


def launchctl(args):
    if not args:
        err("Usage: launchctl <subcommand> ... | help [subcommand]")
        return 64
    cmd, rest = args[0], args[1:]
    if cmd == "bootstrap":
        if len(rest) != 2 or not re.fullmatch(r"gui/\d+", rest[0]):
            err("Usage: launchctl bootstrap <domain-target> [service-path, service-path2, ...]")
            return 64
        if not launchd_domain_ok(rest[0][4:]):
            err("Bootstrap failed: 125: Domain does not support specified action")
            return 125
        path = rest[1]
        try:
            st = os.stat(path)
            with open(path, "rb") as f:
                plist = plistlib.load(f)
        except (OSError, plistlib.InvalidFileException, ValueError) as e:
            err(f"Bootstrap failed: 5: Input/output error ({e})")
            return 5
        # launchd refuses a plist that others may write.
        if st.st_mode & 0o022:
            err(f"Bootstrap failed: 5: Input/output error (bad permissions on {path})")
            return 5
        d = service_dir("launchd", plist["Label"])
        if os.path.exists(os.path.join(d, "loaded")):
            err("Bootstrap failed: 5: Input/output error")
            return 5
        write(os.path.join(d, "loaded"), json.dumps({"path": path, "plist": plist}, default=str))
        if plist.get("RunAtLoad"):
            problem = launchd_run(d, plist)
            if problem:
                err(f"Bootstrap failed: 5: Input/output error ({problem})")
                return 5
        return 0
    if cmd in ("bootout", "print", "kickstart"):
        kill = False
        if cmd == "kickstart" and rest and rest[0] == "-k":
            kill, rest = True, rest[1:]
        uid, label = launchd_target(rest[0]) if len(rest) == 1 else (None, None)
        if label is None:
            err(f"Usage: launchctl {cmd} <service-target>")
            return 64
        d = service_dir("launchd", label)
        loaded = read(os.path.join(d, "loaded"))
        if loaded is None or not launchd_domain_ok(uid):
            if cmd == "print":
                err(f'Could not find service "{label}" in domain for uid: {uid}')
            else:
                what = "Boot-out" if cmd == "bootout" else "Kickstart"
                err(f"{what} failed: 113: Could not find specified service")
            return 113
        loaded = json.loads(loaded)
        plist = loaded["plist"]
        if cmd == "bootout":
            # Returns at once, as launchd may: the service is unloaded once its process has exited
            # (SIGTERM, SIGKILL after ExitTimeOut), so a caller must wait for that itself.
            subprocess.Popen(
                [sys.executable, os.path.abspath(__file__), "unload", d, str(plist.get("ExitTimeOut", 20))],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
                env=os.environ.copy(),
            )
            return 0
        if cmd == "kickstart":
            if kill:
                terminate(d, float(plist.get("ExitTimeOut", 20)))
            if running_pid(d) is None:
                problem = launchd_run(d, plist)
                if problem:
                    err(f"Kickstart failed: 5: Input/output error ({problem})")
                    return 5
            return 0
        pid = running_pid(d)
        code = last_exit(d)
        lines = [
            f"gui/{uid}/{label} = {{",
            f"\tactive count = {1 if pid else 0}",
            f"\tpath = {loaded['path']}",
            "\ttype = LaunchAgent",
            f"\tstate = {'running' if pid else 'not running'}",
            "",
            f"\tprogram = {plist['ProgramArguments'][0]}",
        ]
        if pid:
            lines.append(f"\tpid = {pid}")
        lines.append(f"\tlast exit code = {code if code is not None else '(never exited)'}")
        lines.append("}")
        out("\n".join(lines))
        return 0
    err(f"Unrecognized subcommand: {cmd}")
    return 64


# --- systemctl --user ---------------------------------------------------------------------------


def unit_dir():
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.environ["HOME"], ".config")
    return os.path.join(base, "systemd", "user")


def parse_unit(text):
    """Sections of key=value lines, in order, keys repeated (systemd.syntax)."""
    sections, current = {}, None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        key, _, value = line.partition("=")
        current.append((key.strip(), value.strip()))
    return sections


def specifiers(value):
    """%% and %h, the specifiers a user unit may use here; any other is an error in systemd."""

    def one(m):
        c = m.group(1)
        if c == "%":
            return "%"
        if c == "h":
            return os.environ["HOME"]
        raise ValueError(f"unknown specifier %{c}")

    return re.sub(r"%(.)", one, value)


def values(section, key):
    return [v for k, v in section if k == key]


def unit_job(text):
    units = parse_unit(text)
    svc = units.get("Service", [])
    (exec_start,) = values(svc, "ExecStart")
    words = shlex.split(specifiers(exec_start), posix=True)
    # Variable expansion applies to the arguments, not the executable: "$$" is a literal "$".
    argv = [words[0]] + [re.sub(r"\$\$", "$", w) for w in words[1:]]
    env = {
        k: os.environ[k]
        for k in ("HOME", "USER", "LOGNAME", "PATH", "XDG_RUNTIME_DIR", "TMPDIR")
        if k in os.environ
    }
    for line in values(svc, "Environment"):
        for word in shlex.split(specifiers(line), posix=True):
            k, _, v = word.partition("=")
            env[k] = v
    cwd = values(svc, "WorkingDirectory")
    cwd = os.environ["HOME"] if not cwd or cwd[-1] == "~" else specifiers(cwd[-1])
    log = None
    for key in ("StandardOutput", "StandardError"):
        for v in values(svc, key):
            if v.startswith("append:"):
                log = specifiers(v[len("append:") :])
    timeout = values(svc, "TimeoutStopSec")
    return {
        "argv": argv,
        "env": env,
        "cwd": cwd,
        "log": log,
        "timeout": float(timeout[-1]) if timeout else 90.0,
        "wanted_by": values(units.get("Install", []), "WantedBy"),
    }


def systemctl(args):
    if not args or args[0] != "--user":
        err("Failed to connect to bus: No medium found (this fake is the user manager only)")
        return 1
    args = args[1:]
    cmd, rest = (args[0], args[1:]) if args else ("list-units", [])
    loaded_dir = os.path.join(STATE, "systemd-loaded")
    os.makedirs(loaded_dir, exist_ok=True)
    if cmd == "daemon-reload":
        for f in os.listdir(loaded_dir):
            os.remove(os.path.join(loaded_dir, f))
        if os.path.isdir(unit_dir()):
            for f in os.listdir(unit_dir()):
                if f.endswith(".service"):
                    write(os.path.join(loaded_dir, f), read(os.path.join(unit_dir(), f)))
        return 0
    if cmd == "show" and rest[:2] == ["--property=MainPID", "--value"] and len(rest) == 3:
        out(str(running_pid(service_dir("systemd", rest[2])) or 0))
        return 0
    if len(rest) != 1 or not rest[0].endswith(".service"):
        err(f"Unknown command verb or arguments: {' '.join(args)}")
        return 1
    unit = rest[0]
    path = os.path.join(unit_dir(), unit)
    d = service_dir("systemd", unit)
    on_disk = read(path)
    snapshot = read(os.path.join(loaded_dir, unit))
    if cmd in ("enable", "disable"):
        if on_disk is None:
            err(f"Failed to {cmd} unit: Unit file {unit} does not exist.")
            return 1
        for target in unit_job(on_disk)["wanted_by"]:
            link = os.path.join(unit_dir(), f"{target}.wants", unit)
            if cmd == "enable" and not os.path.islink(link):
                os.makedirs(os.path.dirname(link), exist_ok=True)
                os.symlink(path, link)
                err(f"Created symlink {link} → {path}.")
            elif cmd == "disable" and os.path.islink(link):
                os.remove(link)
                err(f'Removed "{link}".')
        return 0
    pid = running_pid(d)
    code = last_exit(d)
    if cmd == "is-active":
        state = (
            "active"
            if pid
            else (
                "failed"
                if code not in (None, 0) and not os.path.exists(os.path.join(d, "reset"))
                else "inactive"
            )
        )
        out(state)
        return 0 if state == "active" else 3
    if cmd == "reset-failed":
        if snapshot is None and on_disk is None:
            err(f"Failed to reset failed state of unit {unit}: Unit {unit} not loaded.")
            return 1
        write(os.path.join(d, "reset"), "")
        return 0
    if cmd == "start":
        text = snapshot if snapshot is not None else on_disk
        if text is None:
            err(f"Failed to start {unit}: Unit {unit} not found.")
            return 5
        if snapshot is not None and on_disk is not None and snapshot != on_disk:
            err(
                f"Warning: The unit file, source configuration file or drop-ins of {unit} changed on disk."
                " Run 'systemctl --user daemon-reload' to reload units."
            )
        if pid:
            return 0
        try:
            job = unit_job(text)
        except ValueError as e:
            err(f"Failed to start {unit}: Unit {unit} has a bad unit file setting. ({e})")
            return 1
        if os.path.exists(os.path.join(d, "reset")):
            os.remove(os.path.join(d, "reset"))
        if job["log"]:
            os.makedirs(os.path.dirname(job["log"]), exist_ok=True)
        if spawn(d, job):
            err(f"Job for {unit} failed because the control process exited with error code.")
            return 1
        return 0
    if cmd == "stop":
        if snapshot is None and on_disk is None and pid is None:
            err(f"Failed to stop {unit}: Unit {unit} not loaded.")
            return 5
        terminate(d, unit_job(snapshot or on_disk)["timeout"] if (snapshot or on_disk) else 90.0)
        # A stop by the manager is not a failure, whatever the exit status.
        write(os.path.join(d, "reset"), "")
        return 0
    err(f"Unknown command verb {cmd}.")
    return 1


def main():
    tool, args = sys.argv[1], sys.argv[2:]
    if tool == "supervise":
        supervise(args[0])
        return 0
    if tool == "unload":
        terminate(args[0], float(args[1]))
        os.remove(os.path.join(args[0], "loaded"))
        return 0
    os.makedirs(STATE, exist_ok=True)
    with open(os.path.join(STATE, "calls.jsonl"), "a", encoding="utf-8") as f:
        f.write(json.dumps([tool, *args]) + "\n")
    return {"launchctl": launchctl, "systemctl": systemctl}[tool](args)


if __name__ == "__main__":
    sys.exit(main())
