"""`make run`: a moto server that outlives `spigot dev`, then `spigot dev` on it.

* moto (tools/moto_server.py) is started once, in its own session, and kept:
  restarting `spigot dev` (to change its target, say) finds the same queues,
  buffered hooks, filters and spigot state. `make stop` (this script with
  --stop) ends it; that is when they are lost.
* Ports are checked first: a port another program holds is named at once,
  with the way to choose another, and nothing is started or written.
* `spigot dev` replaces this process: Ctrl-C stops it and nothing else (not
  the caller's shell, not a `| tee`).
"""
import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

PID_FILE = ".spigot/moto.pid"


def is_moto(port):
    """True when a moto server answers on the port."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/data.json", timeout=1) as r:
            return r.status == 200 and b"sqs" in r.read()
    except Exception:
        return False


def taken(port):
    """True when something listens on 127.0.0.1:port."""
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def fail(message):
    print(f"make run: {message}", file=sys.stderr)
    sys.exit(2)


def spigot_binary():
    """Where cargo put `spigot`: $CARGO_TARGET_DIR, else the workspace's own
    target directory as `cargo metadata` names it, else ./target."""
    target = os.environ.get("CARGO_TARGET_DIR")
    if not target:
        try:
            out = subprocess.run(["cargo", "metadata", "--format-version", "1", "--no-deps"],
                                 capture_output=True, text=True, timeout=60)
            target = json.loads(out.stdout)["target_directory"]
        except Exception:
            target = "target"
    return os.path.join(target, "debug", "spigot")


def stop():
    try:
        pid = int(open(PID_FILE).read())
    except (OSError, ValueError):
        print("make stop: no moto started by make run (.spigot/moto.pid)")
        return
    try:
        os.killpg(pid, signal.SIGTERM)
        print(f"make stop: moto (pid {pid}) stopped; the local buffer, filters and state are gone")
    except ProcessLookupError:
        print("make stop: moto had already stopped")
    os.remove(PID_FILE)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--moto-port", type=int, default=5000)
    p.add_argument("--listen-port", type=int, default=3000)
    p.add_argument("--sink-port", type=int, default=3001)
    p.add_argument("--spigot", default=None)
    p.add_argument("--python", default=sys.executable)
    p.add_argument("--stop", action="store_true")
    p.add_argument("args", nargs=argparse.REMAINDER)
    a = p.parse_args()
    if a.stop:
        return stop()
    extra = [x for x in a.args if x != "--"]
    # Checked before anything starts: a missing binary never leaves moto behind.
    a.spigot = a.spigot or spigot_binary()
    if not os.access(a.spigot, os.X_OK):
        fail(f"no spigot binary at {a.spigot}; build it with `cargo build -p spigot-cli` "
             f"(CARGO_TARGET_DIR, when set, says where cargo puts it)")
    # `make run ARGS="--listen 127.0.0.1:3010 --sink 127.0.0.1:3011"` moves them.
    for flag, attr in [("--listen", "listen_port"), ("--sink", "sink_port")]:
        for i, x in enumerate(extra):
            value = x.split("=", 1)[1] if x.startswith(flag + "=") else (
                extra[i + 1] if x == flag and i + 1 < len(extra) else None)
            if value is not None:
                try:
                    setattr(a, attr, int(value.rsplit(":", 1)[1]))
                except (IndexError, ValueError):
                    fail(f"{flag} {value}: expected HOST:PORT")
    moto_up = is_moto(a.moto_port)
    if not moto_up and taken(a.moto_port):
        fail(f"port {a.moto_port} is taken by another program (not moto); "
             f"choose another: make run MOTO_PORT={a.moto_port + 55}")
    for port, what, var in [(a.listen_port, "the webhook receiver", "--listen"),
                            (a.sink_port, "the built-in sink", "--sink")]:
        if taken(port):
            fail(f"port {port} ({what}) is taken; is another spigot dev running? "
                 f"choose another: make run ARGS=\"{var} 127.0.0.1:{port + 10}\"")
    if not moto_up:
        os.makedirs(".spigot", exist_ok=True)
        log = open(".spigot/moto.log", "ab")
        moto = subprocess.Popen(
            [a.python, "tools/moto_server.py", "-H", "127.0.0.1", "-p", str(a.moto_port)],
            stdout=log, stderr=log, start_new_session=True)
        with open(PID_FILE, "w") as f:
            f.write(str(moto.pid))
        deadline = time.time() + 20
        while not is_moto(a.moto_port):
            if moto.poll() is not None or time.time() > deadline:
                fail(f"moto did not start on port {a.moto_port}; see .spigot/moto.log")
            time.sleep(0.1)
        print(f"make run: moto on 127.0.0.1:{a.moto_port} (kept across restarts; `make stop` ends it)",
              file=sys.stderr)
    else:
        print(f"make run: reusing moto on 127.0.0.1:{a.moto_port}: the buffer, filters and state are kept",
              file=sys.stderr)
    args = [a.spigot, "dev", "--endpoint", f"http://127.0.0.1:{a.moto_port}"]
    if not any(x.startswith("--listen") for x in extra):
        args += ["--listen", f"127.0.0.1:{a.listen_port}"]
    if not any(x.startswith("--sink") for x in extra):
        args += ["--sink", f"127.0.0.1:{a.sink_port}"]
    try:
        os.execv(a.spigot, args + extra)
    except OSError as e:
        if not moto_up:
            os.killpg(moto.pid, signal.SIGTERM)
            os.remove(PID_FILE)
        fail(f"cannot start {a.spigot}: {e}; moto was stopped again")


main()
