"""The least a trial's fixed costs can be on this machine: Ray Tune trials that each launch a Train run
whose loop only loads the model, timed beside ncsearch's own fixed costs (bench/trial_cost.py).

Issue 13 asks for per-trial fixed costs (worker-group start, model load, checkpoint write and read) of
at most 10% of a trial. Most of what ncsearch pays there is paid by any Ray Train V2 run launched from
a Tune trial: `fit()` starts a controller process and then a worker process (each imports Ray Train,
and the worker torch, before it can do anything; Ray Train asks Ray for a runtime environment per process, so
each is started through Ray's setup_worker.py first), plus the Tune report queue and Train's
synchronization actor beside them; the worker then imports transformers to build the model. This
bench measures exactly that and nothing of ncsearch's: a Tune function trainable (0 CPUs, reused
between trials, as ncsearch's trial driver) launching a trainer with Ray's own `TuneReportCallback`,
one worker of one CPU, whose loop calls `AutoModelForMaskedLM.from_pretrained` on the same model and
reports once. Two trainers are measured: Ray's own `TorchTrainer`, and ncsearch's lean one
(`training/_lean_trainer.lean_trainer`: it leaves out the helper processes a trial does not use,
runs Ray Train's controller in the trial's own process instead of starting a controller actor and,
for one CPU worker, leaves out the torch backend). Ray is started by ncsearch's own `ray.init` settings.

It prints, per trial (mean, min and max over the trials), the three parts bench/trial_cost.py
reports for ncsearch, measured the same way (wall time in the Tune trial's process and in the worker):

- worker-group start: `fit()` called until the loop runs;
- model load: the loop's `from_pretrained` (transformers' import included, as in ncsearch's setup);
- teardown: the loop's end until `fit()` returns.

It is a floor, not a speed target: the least a Train run costs a Tune trial with Ray's trainer
as shipped, and with ncsearch's, whatever the recipe does. It has no baseline commit to be a ratio
against (bench/trial_cost.py is the target bench, and prints this floor beside ncsearch's own
fixed costs with `--floor`).

    .venv/bin/python bench/fit_floor.py --trials 4 --concurrent 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
TRAINERS = {"plain": "Ray's TorchTrainer",
            "lean": "ncsearch's lean trainer (training/_lean_trainer.py: controller in the trial's process; "
                    "one CPU worker: DataParallelTrainer, no torch backend)"}


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--concurrent", type=int, default=2)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--json", default=None, help="also write the means per trainer to this JSON file")
    return parser.parse_args(argv)


def floor_loop(config: dict) -> None:
    """A Train worker's least work: load the model (importing transformers), report once."""
    started = time.time()
    import torch
    from transformers import AutoModelForMaskedLM

    torch.set_num_threads(1)
    AutoModelForMaskedLM.from_pretrained(config["model_path"])
    loaded = time.time()
    import ray.train

    ray.train.report({"loop_start": started, "model_loaded": loaded})
    # Train V2 keeps only checkpointed metrics in its Result, so the times go back through a file.
    Path(config["times"]).write_text(json.dumps({"loop_start": started, "model_loaded": loaded, "loop_end": time.time()}))


def floor_trial(config: dict) -> None:
    """A Tune trial launching one TorchTrainer of `floor_loop`, timing its `fit()`."""
    from ray import tune
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    from ncsearch.training._lean_trainer import lean_trainer

    storage = Path(config["storage"]) / tune.get_context().get_trial_id()
    times = storage / "times.json"
    trainer = (lean_trainer if config["trainer"] == "lean" else TorchTrainer)(
        floor_loop,
        train_loop_config={"model_path": config["model_path"], "times": str(times)},
        scaling_config=ScalingConfig(num_workers=1, resources_per_worker={"CPU": 1.0}),
        run_config=RunConfig(name="train", storage_path=str(storage), callbacks=[TuneReportCallback()]),
    )
    fit_start = time.time()
    trainer.fit()
    fit_end = time.time()
    m = json.loads(times.read_text())
    tune.report({"start_s": m["loop_start"] - fit_start, "load_s": m["model_loaded"] - m["loop_start"],
                 "teardown_s": fit_end - m["loop_end"], "trainer": config["trainer"], "done": 1})


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    from ncsearch.search import TRIAL_DRIVER_MEMORY, _init_ray, select_train_v2

    select_train_v2()
    from ray import tune

    from ncsearch.data import resolve_data_root
    from ncsearch.models import ensure_model

    model_path = ensure_model("minilm-l6", data_root=resolve_data_root(args.data_dir))
    _init_ray(None, verbose=False)
    storage = tempfile.mkdtemp(prefix="ncsearch-fit-floor-")
    tuner = tune.Tuner(
        tune.with_resources(floor_trial, {"cpu": 0, "memory": TRIAL_DRIVER_MEMORY}),
        param_space={"model_path": model_path, "storage": storage, "trainer": tune.grid_search(list(TRAINERS)),
                     "i": tune.grid_search(list(range(args.trials)))},
        tune_config=tune.TuneConfig(max_concurrent_trials=args.concurrent, reuse_actors=True),
        run_config=tune.RunConfig(name="floor", storage_path=storage, verbose=0),
    )
    results = tuner.fit()
    rows = [r.metrics for r in results if r.error is None and r.metrics.get("done")]
    if len(rows) != args.trials * len(TRAINERS):
        raise SystemExit(f"floor trials failed: {[str(r.error) for r in results if r.error]}")
    print(f"machine: {os.cpu_count()} CPUs; {args.trials} trials of each trainer, {args.concurrent} at a time; "
          f"model {model_path}")
    means: dict[str, dict[str, float]] = {}
    for trainer, what in TRAINERS.items():
        mine = [row for row in rows if row["trainer"] == trainer]
        print(f"\n{what}\n{'part (s per trial)':24s}{'mean':>8s}{'min':>8s}{'max':>8s}")
        for key, label in (("start_s", "worker-group start"), ("load_s", "model load"), ("teardown_s", "teardown"),
                           (None, "total")):
            values = [row[key] if key else row["start_s"] + row["load_s"] + row["teardown_s"] for row in mine]
            means.setdefault(trainer, {})[key or "total_s"] = statistics.fmean(values)
            print(f"{label:24s}{statistics.fmean(values):8.2f}{min(values):8.2f}{max(values):8.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(means, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
