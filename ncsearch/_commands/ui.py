"""`ncsearch ui [RUN_DIR | SPACE.yaml | NAME]`: the MLflow UI on 127.0.0.1 over a search's store.

Starts `mlflow ui` (in its own process group: MLflow 3 starts helper processes) and stops the whole
group on Ctrl-C. With no argument it serves the most recently used run directory under `runs/`.
One server worker is enough for one person's browser (MLflow's default of 4 takes half a minute to
start on two cores), and MLflow's job runner (six helper processes for GenAI jobs such as LLM judges,
which a search never uses) stays off unless MLFLOW_SERVER_ENABLE_JOB_EXECUTION says otherwise. The
search's runs are training runs: the printed link opens the experiment in the UI's "Model training"
view (see `ncsearch._training_runs`).
"""

from __future__ import annotations

import argparse


def add_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", nargs="?", default=None,
                        help="a run directory, a search-space YAML file or a search name (default: the latest run under runs/)")
    parser.add_argument("--port", type=int, default=5000, help="port on 127.0.0.1 (default 5000)")
    parser.add_argument("--tracking-uri", default=None, help="serve this tracking store instead")
    parser.add_argument("--storage", default=None, help="folder holding run directories (default: runs)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="overrides applied when TARGET is a YAML file (to find its run directory)")


def main(args: argparse.Namespace) -> int:
    import os
    import shutil
    import signal
    import subprocess
    import sys
    from pathlib import Path

    from ncsearch._endpoints import check_port_free
    from ncsearch._locate import locate_store

    check_port_free(args.port)  # 1..65535 and free on 127.0.0.1: mlflow would fail only after starting
    where = locate_store(args.target, tracking_uri=args.tracking_uri, storage=args.storage, overrides=args.overrides)
    if where.tracking_uri.startswith(("http://", "https://")):
        print(f"{where.tracking_uri} is a tracking server already; open it in a browser")
        return 0
    exe = Path(sys.executable).with_name("mlflow")
    command = [str(exe) if exe.is_file() else (shutil.which("mlflow") or "mlflow"), "ui",
               "--backend-store-uri", where.tracking_uri, "--host", "127.0.0.1", "--port", str(args.port),
               "--workers", "1"]
    print(f"serving {where.tracking_uri} ({where.how})")
    if where.experiment:
        print(f"experiment: {where.experiment}")
    print(f"MLflow UI: http://127.0.0.1:{args.port}   (Ctrl-C stops it)", flush=True)
    experiment_id = _experiment_id(where.run_dir)
    if experiment_id:
        from ncsearch._training_runs import MODEL_TRAINING_VIEW

        print(f"runs: http://127.0.0.1:{args.port}/#/experiments/{experiment_id}/runs?{MODEL_TRAINING_VIEW}", flush=True)
    server_env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ}
    proc = subprocess.Popen(command, start_new_session=True, env=server_env)

    def _terminate(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _terminate)  # `kill` also stops the server group (finally below)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def _experiment_id(run_dir: object) -> str | None:
    """The search's MLflow experiment id, from its run directory's tracking.json (None when unknown)."""
    import json
    from pathlib import Path

    if run_dir is None:
        return None
    try:
        return str(json.loads((Path(str(run_dir)) / "tracking.json").read_text())["experiment_id"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
