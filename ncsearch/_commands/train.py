"""`ncsearch train SPACE.yaml --set nc3.alpha=10 --set baseline=cda`: one fixed training run, no search.

Every searched field must be fixed (by the file or `--set`). The run goes through the same Ray Train
V2 path as a search trial (`ncsearch.train.fit_trial`), writes its checkpoints under `--out`
(default `<storage>/<name>-train`), prints the workers' progress lines, and logs to MLflow: a run in
the experiment `tracking.experiment` (or the spec's name) at `tracking.uri` (or
`sqlite:///<out>/mlflow.db`) with the flattened spec as params, the train/* curve as step metrics and
the final checkpoint path as the tag `ncsearch.checkpoint`.

Running the same command again resumes the run from its last checkpoint; a different spec in the same
`--out` folder is refused rather than mixed into it.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("space", help="search-space YAML file (every searched field fixed, e.g. with --set)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a key (dotted path; value read as YAML); repeatable")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="run folder for checkpoints, metrics.jsonl and the default MLflow store "
                             "(default: <storage>/<name>-train)")
    parser.add_argument("--data-dir", default=None, metavar="DIR", help="benchmark/corpus folder (default: resolved)")
    parser.add_argument("--address", default=None, help="Ray cluster address (default: a local Ray instance)")


def main(args: argparse.Namespace) -> int:
    from ncsearch.config import load_spec
    from ncsearch.errors import ConfigError

    # One run, not a search: the search's controls do not apply (and alpha = 0 is a fine run to ask for).
    spec = load_spec(args.space, [*args.overrides, "search.control=false"])
    if not spec.is_concrete():
        open_keys = list(spec.distributions())
        raise ConfigError(
            f"{args.space}: a training run needs fixed values; still searched: {', '.join(open_keys)} "
            f"(fix with --set {open_keys[0]}=VALUE)"
        )
    from ncsearch import _endpoints

    if spec.tracking.uri:  # a password in it moves into this process's environment, never into a record
        spec = spec.model_copy(update={"tracking": spec.tracking.model_copy(
            update={"uri": _endpoints.adopt_credentials(spec.tracking.uri)})})
    _endpoints.check_tracking_uri(spec.tracking.uri, existing=False, what="tracking.uri")
    _endpoints.check_ray_address(args.address)
    from ncsearch.data import resolve_data_root

    data_root = resolve_data_root(args.data_dir or spec.data_dir)
    out = Path(args.out or Path(spec.storage) / f"{spec.name}-train").expanduser().resolve()

    from ncsearch.debias import preflight_baselines
    from ncsearch.models import ensure_model, remember_verified, verify_mlm

    model_path = ensure_model(spec.model, data_root=data_root, trust_remote_code=spec.trust_remote_code)
    verified = verify_mlm(model_path, shown=spec.model, trust_remote_code=spec.trust_remote_code)
    preflight_baselines(spec, data_root, model_path)  # missing data, unusable model: before anything is written
    _claim_out_dir(out, spec)
    remember_verified(verified)  # every check passed
    print(f"ncsearch train: model {spec.model}, baseline {spec.baseline}, nc3.alpha {spec.nc3.alpha:g}, "
          f"{spec.train.steps} steps x {spec.train.batch_size} sequences on {spec.resources.workers_per_trial} worker(s)",
          flush=True)

    import ray

    from ncsearch.train import fit_trial
    from ncsearch.training import metrics_log, read_metrics_log

    if not ray.is_initialized():
        from ncsearch.search import ray_address, set_train_env

        set_train_env(args.address)
        ray.init(address=ray_address(args.address), include_dashboard=False, configure_logging=False)
    tracker = _MlflowRun(spec, out)
    metrics_path = out / "metrics.jsonl"
    try:
        outcome = fit_trial(spec, data_root=data_root, storage_path=out, name="train",
                            callbacks=[metrics_log(metrics_path)], model_path=model_path)
    except BaseException as err:
        tracker.finish(read_metrics_log(metrics_path) if metrics_path.is_file() else [], None, error=err)
        raise
    tracker.finish(read_metrics_log(metrics_path), outcome.checkpoint_dir)
    shown = ", ".join(f"{k}={v:.4g}" for k, v in sorted(outcome.metrics.items()) if k.startswith("train/"))
    print(f"ncsearch train: done at step {int(outcome.metrics.get('step', 0))}: {shown}")
    print(f"ncsearch train: checkpoint {outcome.checkpoint_dir} (model: {outcome.model_dir})")
    print(f"ncsearch train: MLflow run {tracker.run_id} in {tracker.uri}")
    return 0


def _claim_out_dir(out: Path, spec: Any) -> None:
    """Record the spec in `out/spec.yaml`; refuse a folder that holds a run of another spec."""
    import yaml

    from ncsearch.errors import ConfigError

    out.mkdir(parents=True, exist_ok=True)
    saved_path = out / "spec.yaml"
    now = spec.to_dict()
    if saved_path.is_file():
        saved = yaml.safe_load(saved_path.read_text(encoding="utf-8"))
        if saved != now:
            changed = sorted(k for k in set(saved or {}) | set(now) if (saved or {}).get(k) != now.get(k))
            raise ConfigError(f"--out {str(out)!r} holds a run of a different spec (differs in: {', '.join(changed)}); "
                              "choose another --out")
        print(f"ncsearch train: resuming the run in {out}", flush=True)
        return
    saved_path.write_text(yaml.safe_dump(now, sort_keys=False), encoding="utf-8")


class _MlflowRun:
    """One MLflow run for the whole `ncsearch train` invocation (mlflow imported only here)."""

    def __init__(self, spec: Any, out: Path):
        import mlflow

        from ncsearch.tracking import default_tracking_uri, flatten_params

        self.uri = spec.tracking.uri or default_tracking_uri(out)
        self.client = mlflow.MlflowClient(tracking_uri=self.uri)
        name = spec.tracking.experiment or spec.name
        experiment = self.client.get_experiment_by_name(name)
        if experiment is None:
            location = (out / "mlartifacts").as_uri() if spec.tracking.uri is None else None
            experiment_id = self.client.create_experiment(name, artifact_location=location)
        else:
            experiment_id = experiment.experiment_id
        run = self.client.create_run(experiment_id, run_name=f"{spec.name}-train",
                                     tags={"ncsearch.role": "train", "ncsearch.run_dir": str(out)})
        self.run_id = run.info.run_id
        from mlflow.entities import Param

        params = [Param(k, v) for k, v in flatten_params(spec.to_dict()).items()]
        for start in range(0, len(params), 100):
            self.client.log_batch(self.run_id, params=params[start:start + 100])

    def finish(self, history: list[dict[str, Any]], checkpoint: Path | None, *, error: BaseException | None = None) -> None:
        import math
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [
            Metric(key, float(value), now, int(row["step"]))
            for row in history
            for key, value in row.items()
            if key.startswith("train/") and isinstance(value, (int, float)) and math.isfinite(float(value))
        ]
        for start in range(0, len(metrics), 500):
            self.client.log_batch(self.run_id, metrics=metrics[start:start + 500])
        if checkpoint is not None:
            self.client.set_tag(self.run_id, "ncsearch.checkpoint", str(checkpoint))
        if error is not None:
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            self.client.set_tag(self.run_id, "ncsearch.failure_reason", reason[:4000])
        self.client.set_terminated(self.run_id, status="FAILED" if error is not None else "FINISHED")
