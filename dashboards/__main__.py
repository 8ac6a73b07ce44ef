"""Start the dashboard, served on this machine only, from any working directory.

    python -m dashboards                      # http://localhost:8501 (from the repository root)
    python <repository>/dashboards            # the same from any other folder
    python -m dashboards --port 8600 --results other/results --runs other/runs/distill
    python -m dashboards --share              # every interface, deliberately (e.g. behind an SSH tunnel)

`streamlit run dashboards/app.py` reads .streamlit/config.toml (localhost) only when started from the
repository root; this launcher passes the address itself, and the app refuses to show results when
it is served on all interfaces without `--share`. Inputs are checked before Streamlit starts.
"""
from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # `python <repository>/dashboards` from another folder puts only dashboards/ on the path

from configs.cli import ArgumentParser, UserError, run_command  # noqa: E402
APP = ROOT / "dashboards" / "app.py"
SHARE_ENV = "SENSEFLOW_DASHBOARD_SHARE"  # set by --share; the app shows results on all interfaces only then


class DashboardError(UserError, ValueError):
    """A dashboard input that cannot work (a location that is a file, a port in use)."""


def port_is_free(port: int, address: str) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((address, port))
        except OSError:
            return False
    return True


def streamlit_command(args) -> tuple[list[str], dict[str, str]]:
    """The `streamlit run` command line and environment for the parsed arguments (checked first)."""
    for flag, path, kind in (("--results", args.results, "dir"), ("--runs", args.runs, "dir"),
                             ("--params", args.params, "file")):
        path = Path(path)
        if path.exists() and (path.is_dir() != (kind == "dir")):
            raise DashboardError(f"{flag} is not a {'folder' if kind == 'dir' else 'file'} ({path}): "
                                 f"point {flag} at the {'folder' if kind == 'dir' else 'params file'} to show")
    if not 1 <= args.port <= 65535:
        raise DashboardError(f"port out of range ({'--port'} {args.port}): use 1-65535")
    address = "0.0.0.0" if args.share else "localhost"
    if not port_is_free(args.port, "0.0.0.0" if args.share else "127.0.0.1"):
        raise DashboardError(f"port {args.port} is in use (--port): stop the other server or pass --port N")
    env = {**os.environ, "SENSEFLOW_RESULTS": str(Path(args.results).resolve()),
           "SENSEFLOW_RUNS": str(Path(args.runs).resolve()), "SENSEFLOW_PARAMS": str(Path(args.params).resolve()),
           "SENSEFLOW_DVC_REPO": str(Path(args.repo).resolve())}
    if args.share:
        env[SHARE_ENV] = "1"
    else:
        env.pop(SHARE_ENV, None)
    cmd = [sys.executable, "-m", "streamlit", "run", str(APP), "--server.address", address,
           "--server.port", str(args.port), "--server.headless", "true", "--browser.gatherUsageStats", "false",
           "--browser.serverAddress", "localhost"]
    return cmd, env


def main(argv=None) -> int:
    ap = ArgumentParser(prog="python -m dashboards", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=8501)
    ap.add_argument("--results", default=str(ROOT / "results"))
    ap.add_argument("--runs", default=str(ROOT / "runs" / "distill"))
    ap.add_argument("--params", default=str(ROOT / "params.yaml"))
    ap.add_argument("--repo", default=str(ROOT), help="where `dvc exp show` runs")
    ap.add_argument("--share", action="store_true", help="serve on every interface (anyone who can reach the port)")
    ap.add_argument("--print-command", action="store_true", help="print the streamlit command instead of running it")
    args = ap.parse_args(argv)
    cmd, env = streamlit_command(args)
    if args.print_command:
        print(" ".join(cmd))
        return 0
    print(f"dashboard: http://{'<this host>' if args.share else 'localhost'}:{args.port}", flush=True)
    return subprocess.call(cmd, env=env, cwd=ROOT)


if __name__ == "__main__":
    raise SystemExit(run_command(main))
