"""What a further training seed would cost a worker that already trained one: the real recipe, run
seed after seed in one process.

Issue 13 asks for per-trial fixed costs of at most 10% of a trial. A trial now pays its fixed costs
(a new worker group: Ray Train's processes, torch and transformers imports, model load, data) once
per training seed, and they are at the floor of any Tune trial that launches a Train run
(bench/fit_floor.py, bench/trial_cost.py --floor). The lever left is fewer worker groups than
training runs: one Train run for all of a configuration's seeds. This bench measures what that
would save before anyone builds it: in one process, like one worker of one CPU, it sets up and
trains alpha.yaml's trial at seeds 0, 1, 2, ... with `TrainingRecipe` on a `LocalWorker` (no Ray),
and prints, per seed, the setup (model load, corpus, vocabulary, optimizer; the imports this process
still lacks on the first) and a few training steps with the final checkpoint write.

It is a measurement for a design decision, not a speed target, so it has no baseline commit.

    .venv/bin/python bench/warm_seed_setup.py --seeds 3 --steps 2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="seeds trained one after another (default 3)")
    parser.add_argument("--steps", type=int, default=2, help="training steps per seed (default 2)")
    parser.add_argument("--space", default=str(REPO / "search_spaces" / "alpha.yaml"))
    parser.add_argument("--alpha", type=float, default=10.0)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--json", default=None, help="also write the seconds per seed to this JSON file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    started = time.perf_counter()
    import torch

    torch.set_num_threads(1)  # one worker of one CPU, as alpha.yaml's trials
    from ncsearch.config import load_spec
    from ncsearch.data import resolve_data_root
    from ncsearch.models import ensure_model
    from ncsearch.training import TrainingRecipe
    from ncsearch.training._worker import LocalWorker

    imports_s = time.perf_counter() - started
    data_root = resolve_data_root(args.data_dir)
    spec = load_spec(args.space, [f"nc3.alpha={args.alpha}", f"train.steps={args.steps}", "train.report_every=1",
                                  f"train.checkpoint_every={args.steps}"])
    model_path = ensure_model(spec.model, data_root=data_root)
    rows = []
    for replicate in range(args.seeds):
        seeded = spec.for_replicate(replicate)
        config = {"spec": seeded.to_dict(), "data_root": str(data_root), "model_path": str(model_path)}
        with tempfile.TemporaryDirectory(prefix="ncsearch-warm-seed-") as store:
            t0 = time.perf_counter()
            recipe = TrainingRecipe(config, LocalWorker(Path(store)))
            recipe.setup()
            t1 = time.perf_counter()
            recipe.train()
            t2 = time.perf_counter()
        rows.append({"seed": seeded.train.seed, "setup_s": t1 - t0, "train_s": t2 - t1})
        del recipe

    print(f"machine: {os.cpu_count()} CPUs, one thread; {spec.model} ({model_path}); alpha.yaml's trial at "
          f"alpha={args.alpha:g}, {args.steps} steps per seed")
    print(f"imports before the first seed (torch, ncsearch): {imports_s:.2f} s")
    print(f"{'seed':>6s}{'setup s':>10s}{f'{args.steps} steps + checkpoint s':>28s}")
    for row in rows:
        print(f"{row['seed']:>6d}{row['setup_s']:>10.2f}{row['train_s']:>28.2f}")
    if len(rows) > 1:
        later = rows[1:]
        print(f"a further seed's setup: {min(r['setup_s'] for r in later):.2f}-{max(r['setup_s'] for r in later):.2f} s, "
              f"the first's {rows[0]['setup_s']:.2f} s (transformers' import and the first model load included)")
    if args.json:
        Path(args.json).write_text(json.dumps({"imports_s": imports_s, "seeds": rows}, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
