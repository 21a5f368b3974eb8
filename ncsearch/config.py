"""The search-space schema: a YAML file becomes a validated `SearchSpec`, or a `ConfigError`.

The pydantic models below are the single source of truth for what a search space may say. Every
"searchable" field holds either a concrete value or a `Distribution` (choice, uniform, loguniform,
int, grid), and the value constraints of the field (alpha >= 0, size >= 1, ...) are applied to every
value a distribution can produce, so a bad range is caught before Ray starts.

Errors name the file, the dotted YAML path and the line number; all errors of a file are reported at
once, one line each.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from ncsearch._options import StrictOptions
from ncsearch.debias import available as available_baselines
from ncsearch.errors import ConfigError

__all__ = [
    "BASELINES",
    "DELTA_PREFIX",
    "DIST_KINDS",
    "SUITES",
    "Distribution",
    "SearchSpec",
    "apply_overrides",
    "benchmark_names",
    "load_spec",
    "parse_spec",
]

DIST_KINDS = ("choice", "uniform", "loguniform", "int", "grid")
#: The registered debiasing baselines (ncsearch.debias owns the names and their options).
BASELINES = tuple(available_baselines())
# Bias types of StereoSet (gender, race, religion, profession) and CrowS-Pairs (the rest, and gender/religion).
DOMAINS = (
    "gender", "race", "religion", "profession", "race-color", "socioeconomic", "nationality", "age",
    "sexual-orientation", "physical-appearance", "disability",
)
# The suite `gender` scores only the gender parts of StereoSet and CrowS-Pairs.
SUITE_DOMAINS: dict[str, tuple[str, ...] | None] = {"gender": ("gender",), "full": None}
GENDER_SUITE = ("stereoset", "crows_pairs", "seat", "bec_pro", "winobias", "perplexity")


def benchmark_names() -> tuple[str, ...]:
    """The registered benchmarks, sorted (ncsearch.evaluate owns the names and their options).

    Imported here, on first use, not when this module is: the benchmarks import torch, and reading
    a search space (or `ncsearch --help`) should not need it until a benchmark name is checked.
    """
    from ncsearch.evaluate import available

    return tuple(available())


class _Suites(Mapping[str, tuple[str, ...]]):
    """The named suites: `gender`, and `full` (every registered benchmark: the gender suite's, then
    the rest in name order), read from the registry when first asked for."""

    def __getitem__(self, name: str) -> tuple[str, ...]:
        if name == "gender":
            return GENDER_SUITE
        if name == "full":
            return GENDER_SUITE + tuple(n for n in benchmark_names() if n not in GENDER_SUITE)
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        return iter(("gender", "full"))

    def __len__(self) -> int:
        return 2


SUITES: Mapping[str, tuple[str, ...]] = _Suites()


@dataclass(frozen=True)
class Distribution:
    """A search distribution over one field.

    `kind` is one of DIST_KINDS; `args` are the options (choice, grid) or the inclusive bounds
    (uniform, loguniform, int), already validated against the field's own type and constraints.
    """

    kind: str
    args: tuple[Any, ...]

    def to_yaml(self) -> dict[str, list[Any]]:
        return {self.kind: list(self.args)}


def _first_error(err: ValidationError) -> str:
    e = err.errors()[0]
    return f"{e['msg']} (got {e['input']!r})"


def searchable(inner: Any) -> Any:
    """A field type that accepts a value of `inner` or a one-key distribution mapping over it.

    Written as a plain validator rather than a pydantic Union so the error says what was expected in
    one sentence instead of one clause per union member.
    """
    adapter = TypeAdapter(inner, config=ConfigDict(strict=True))

    def parse(value: Any) -> Any:
        if isinstance(value, Distribution):
            return value
        if isinstance(value, Mapping):
            keys = list(value)
            if len(keys) != 1 or keys[0] not in DIST_KINDS:
                raise ValueError(
                    f"expected a value or a one-key distribution ({', '.join(DIST_KINDS)}), got keys {keys}"
                )
            kind, args = keys[0], value[keys[0]]
            if not isinstance(args, list):
                raise ValueError(f"'{kind}' takes a list, got {args!r}")
            if kind in ("choice", "grid"):
                if not args:
                    raise ValueError(f"'{kind}' needs at least one option, got []")
            else:
                if len(args) != 2:
                    raise ValueError(f"'{kind}' takes [low, high], got {args!r}")
            try:
                checked = tuple(adapter.validate_python(a) for a in args)
            except ValidationError as err:
                raise ValueError(f"'{kind}' option invalid: {_first_error(err)}") from None
            if kind in ("uniform", "loguniform", "int"):
                low, high = checked
                if not all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in checked):
                    raise ValueError(f"'{kind}' bounds must be numbers, got {args!r}")
                if low > high:
                    raise ValueError(f"'{kind}' needs low <= high, got [{low}, {high}]")
                if kind == "loguniform" and low <= 0:
                    raise ValueError(f"'loguniform' needs low > 0, got {low}")
                if kind == "int" and not all(isinstance(b, int) for b in checked):
                    raise ValueError(f"'int' bounds must be integers, got {args!r}")
            return Distribution(kind, checked)
        try:
            return adapter.validate_python(value)
        except ValidationError as err:
            raise ValueError(_first_error(err)) from None

    return Annotated[Union[inner, Distribution], PlainValidator(parse)]


_Strict = StrictOptions


PositiveInt = Annotated[int, Field(ge=1)]
NonNegFloat = Annotated[float, Field(ge=0)]
PathStr = Annotated[str, Field(min_length=1)]


def _baseline_options_model() -> type[StrictOptions]:
    """`baseline_options`: one optional section per registered baseline, holding that baseline's own
    options model (declared in its module) with its published defaults. Built from the registry, so a
    new baseline is one module plus one import in `ncsearch.debias`."""
    from pydantic import create_model

    from ncsearch.debias import get_baseline

    fields: dict[str, Any] = {}
    for name in BASELINES:
        options = get_baseline(name).Options
        fields[name] = (options, Field(default_factory=options))
    return create_model("BaselineOptions", __base__=StrictOptions, __doc__="Options of each baseline, by name.", **fields)


BaselineOptions = _baseline_options_model()


class TrainSpec(_Strict):
    """Settings of one Ray Train run (per trial). `batch_size` is the global batch over all workers."""

    steps: searchable(PositiveInt) = 100
    batch_size: searchable(PositiveInt) = 16
    max_length: Annotated[int, Field(ge=8, le=4096)] = 128
    lr: searchable(Annotated[float, Field(gt=0)]) = 5e-5
    warmup_ratio: Annotated[float, Field(ge=0, le=1)] = 0.1
    weight_decay: NonNegFloat = 0.01
    grad_clip: Annotated[float, Field(gt=0)] | None = 1.0
    mlm_probability: Annotated[float, Field(gt=0, lt=1)] = 0.15
    report_every: PositiveInt = 10
    checkpoint_every: PositiveInt = 100
    seed: Annotated[int, Field(ge=0)] = 0
    max_train_sentences: PositiveInt | None = None
    #: Arithmetic of the forward pass (ncsearch/training/_precision.py). "bf16" runs it under
    #: torch.autocast (matrix products in bfloat16; weights, gradients and optimizer state in fp32):
    #: about 1.5x the tokens/s of fp32 on a CPU with native bf16 (AVX512-BF16/AMX) or a bf16 GPU, but
    #: the loss curve is no longer the fp32 one, so compare runs at the same precision (a control
    #: shares its configuration's). "auto": bf16 where the device has it natively, else fp32.
    #: "fp16": float16 autocast with a dynamic loss scaler (torch.amp.GradScaler), GPU only
    #: (`resources.gpus_per_worker` > 0; refused on CPU, where float16 autocast is emulated).
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "fp32"


class VocabSpec(_Strict):
    """The fairness-sensitive vocabulary subset V on which the NC3 statistics are kept (DESIGN.md §5)."""

    source: searchable(Literal["gender", "random", "file"]) = "gender"
    size: searchable(PositiveInt) | None = None
    policy: Literal["single", "first", "all"] = "single"
    file: PathStr | None = None
    frequency_matched: bool = False
    seed: Annotated[int, Field(ge=0)] = 0


class NC3Spec(_Strict):
    """The (U)NC3 regularizer (DESIGN.md §4).

    `labels`: the label of a (feature, token) pair is the original token ("original") or the model's
    input id after masking ("masked_input", the paper's BEC and ASE code: a target that became [MASK]
    drops out of V); see ncsearch.collapse._pairs. `means`: "epoch" is cumulative means that start
    afresh at each epoch (the paper's ADEPT code); the training loop declares the epoch.

    `preset: paper` reproduces the paper's code (Xu et al. 2024, github Xujxyang/Fairness-NC-main).
    It *fixes* the code settings: `PAPER` for every method, plus `PAPER_BY_BASELINE` for the method the
    spec trains (a conflicting explicit value is an error). It also sets `alpha` to the weight the
    paper used with that method (`paper_alpha` of the baseline class) when `alpha` is not given: the
    alpha is a default, and an explicit one (a search over alpha, or the control's 0) is kept. The
    baseline-dependent part is applied by `SearchSpec` (`apply_paper_preset`), which knows the baseline.
    """

    alpha: searchable(NonNegFloat) = 0.0
    kind: searchable(Literal["unc3", "nc3", "both"]) = "unc3"
    preset: Literal["paper"] | None = None
    features: searchable(Literal["encoder", "head"]) = "encoder"
    positions: searchable(Literal["masked", "all"]) = "masked"
    label_shift: searchable(Literal[0, 1]) = 0
    labels: searchable(Literal["original", "masked_input"]) = "original"
    means: searchable(Literal["cumulative", "ema", "batch", "epoch"]) = "cumulative"
    ema_momentum: Annotated[float, Field(gt=0, lt=1)] = 0.9
    vocab: VocabSpec = VocabSpec()

    #: What every method's NC3 code in the paper does: last encoder layer, every non-pad position,
    #: the feature at t paired with the token at t + 1 (`process_batch`), loss `sims.std()`.
    PAPER: ClassVar[dict[str, Any]] = {"features": "encoder", "positions": "all", "label_shift": 1, "kind": "unc3"}
    #: The paper's per-method choices. bec (`bec/code/main_nc.py`) and ase (`ase/finetune_both_nc.py`)
    #: read the labels from `b_input_ids`, which BEC masks with `mask_tokens` and ASE's data holds with
    #: [MASK] at the pronoun; mabel (`mabel/training/model_nc.py`, trainer_nc.py) and adept
    #: (`adept/debias.py`) feed unmasked passes, so their labels are the tokens themselves. adept builds
    #: a new `Statistics` at the top of every epoch; the others build it once before training.
    PAPER_BY_BASELINE: ClassVar[dict[str, dict[str, Any]]] = {
        "bec": {"labels": "masked_input", "means": "cumulative"},
        "ase": {"labels": "masked_input", "means": "cumulative"},
        "mabel": {"labels": "original", "means": "cumulative"},
        "adept": {"labels": "original", "means": "epoch"},
    }
    #: A method the paper did not run: its common statistics (built once, cumulative); the label
    #: source is left to the spec (there is no paper code for that method to reproduce).
    PAPER_OTHER: ClassVar[dict[str, Any]] = {"means": "cumulative"}

    def _fix(self, settings: Mapping[str, Any], *, prefix: str = "", why: str = "") -> None:
        """Set `settings`; an explicitly given, different value is an error (`prefix` names the section
        in messages raised above it, where pydantic gives no location)."""
        for key, value in settings.items():
            if key in self.model_fields_set and getattr(self, key) != value:
                raise ValueError(f"{prefix}preset 'paper' fixes {prefix}{key}={value!r}{why}; "
                                 f"remove {prefix}{key}={getattr(self, key)!r}")
            setattr(self, key, value)

    @model_validator(mode="after")
    def _apply_preset(self) -> NC3Spec:
        if self.preset == "paper":
            self._fix(self.PAPER)
        return self

    def apply_paper_preset(self, baseline: Any) -> None:
        """The baseline-dependent part of `preset: paper` (no-op without the preset): the method's code
        settings, and its paper alpha when `alpha` was not given. `baseline` is the spec's baseline: a
        name, or a Distribution when searched (an error: the settings and alpha depend on it)."""
        if self.preset != "paper":
            return
        if isinstance(baseline, Distribution):
            raise ValueError(  # noqa: TRY004 (pydantic reports ValueError with the file and line; TypeError escapes)
                "nc3.preset 'paper' sets the paper's alpha and code settings of one baseline, but baseline is "
                "searched; run one search per baseline, or drop nc3.preset and set the nc3 options (and nc3.alpha) yourself"
            )
        self._fix(self.PAPER_BY_BASELINE.get(baseline, self.PAPER_OTHER), prefix="nc3.", why=f" for baseline {baseline!r}")
        if "alpha" not in self.model_fields_set:
            from ncsearch.debias import get_baseline

            alpha = get_baseline(baseline).paper_alpha
            if alpha is None:
                raise ValueError(
                    f"nc3.preset 'paper' takes nc3.alpha from the paper's runs, but the paper did not run baseline "
                    f"{baseline!r} (it has no paper_alpha); set nc3.alpha"
                )
            self.alpha = float(alpha)


def _registered_benchmark(name: str) -> str:
    """`name` if a benchmark is registered under it; else the registry's one-line error."""
    names = benchmark_names()
    if name not in names:
        raise ValueError(f"unknown benchmark {name!r}; valid: {', '.join(names)}")
    return name


#: A benchmark name, checked against the registry when a spec is validated (not at import: see
#: `benchmark_names`).
BenchmarkName = Annotated[str, AfterValidator(_registered_benchmark)]


class EvalSpec(_Strict):
    """The evaluation run on each trial's final checkpoint.

    `options` sets a benchmark's own options, e.g. `{crows_pairs: {scorers: [bias_bench, nangia]}}`:
    each section is validated against that benchmark's `Options` model (declared in its module), so a
    bad option fails here, with the file and line.
    """

    suite: Literal["gender", "full", "custom"] = "gender"
    benchmarks: list[BenchmarkName] | None = None
    limits: dict[BenchmarkName, PositiveInt] = {}
    options: dict[BenchmarkName, dict[str, Any]] = {}
    domains: Annotated[list[Literal[DOMAINS]], Field(min_length=1)] | None = None  # type: ignore[valid-type]
    batch_size: PositiveInt = 64
    seed: Annotated[int, Field(ge=0)] = 0
    #: Score with the exact fast path (last layer only at masked rows, oneDNN fused linears); off,
    #: only the plain Hugging Face forward (see ncsearch.evaluate._scoring.score_masked).
    fast_path: bool = True
    #: Arithmetic of the scoring forward (ncsearch/evaluate/_precision.py): "fp32" (today's scores)
    #: or "bf16" (bfloat16 autocast on the plain forward, fast path off; log-probs still float64).
    #: `ncsearch eval --precision bf16` measures the deviation from fp32 on a checkpoint.
    precision: Literal["fp32", "bf16"] = "fp32"

    @field_validator("options")
    @classmethod
    def _options_of_each_benchmark(cls, options: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """Each section against its benchmark's `Options` (kept as given: the benchmark validates it
        again when built, with its defaults)."""
        from pydantic_core import InitErrorDetails

        from ncsearch.evaluate import get_benchmark

        errors: list[InitErrorDetails] = []
        for name, given in options.items():
            try:
                get_benchmark(name).Options.model_validate(given)
            except ValidationError as err:
                errors.extend(
                    InitErrorDetails(type=e["type"], loc=(name, *e["loc"]), input=e["input"],
                                     **({"ctx": e["ctx"]} if "ctx" in e else {}))  # type: ignore[typeddict-item]
                    for e in err.errors()
                )
        if errors:
            raise ValidationError.from_exception_data("EvalSpec.options", errors)
        return options

    @model_validator(mode="after")
    def _custom_needs_list(self) -> EvalSpec:
        if self.suite == "custom" and not self.benchmarks:
            raise ValueError("suite 'custom' needs a non-empty 'benchmarks' list")
        return self

    def benchmark_names(self) -> tuple[str, ...]:
        if self.benchmarks:
            return tuple(self.benchmarks)
        return SUITES[self.suite]

    def domain_filter(self) -> tuple[str, ...] | None:
        """Bias types StereoSet/CrowS-Pairs keep: `domains` if given, else the suite's (gender: gender only)."""
        if self.domains:
            return tuple(self.domains)
        return SUITE_DOMAINS.get(self.suite)


#: An objective `delta/<metric>` is the paired difference of <metric> against the seed-matched control.
DELTA_PREFIX = "delta/"


class Objective(_Strict):
    """One objective of the multi-objective search: an evaluation metric key and its direction.

    `delta/<metric>` names the configuration's mean paired difference against its seed-matched
    control (needs `search.control: true`).
    """

    metric: Annotated[str, Field(pattern=r"^[a-z_]+(/[A-Za-z0-9_.+\-]+)+$")]
    mode: Literal["min", "max"]

    @property
    def base_metric(self) -> str:
        return self.metric.removeprefix(DELTA_PREFIX)

    @property
    def is_delta(self) -> bool:
        return self.metric.startswith(DELTA_PREFIX)


class SearchAlgoSpec(_Strict):
    """How configurations are proposed and how each is trained.

    `replicates`: training seeds per configuration (train.seed, train.seed + 1, ...); Optuna sees the
    mean over them. `control`: for each of those seeds, also train the configuration with alpha = 0
    and everything else the same (same data order and masks), once per distinct non-NC3 setting, and
    report every configuration's paired difference against it.

    Failures, from the inside out: `worker_restarts` is Ray Train's restart budget within one attempt
    of a trial (`FailureConfig.max_failures`): a worker process that dies (killed, out of memory, its
    node lost) restarts the trial's worker group from its last checkpoint. Errors of ncsearch's own
    checks (a non-finite loss, a vocabulary the tokenizer cannot supply) would fail again and are not
    restarted. `max_failures` is Tune's budget of further attempts of a trial that still failed;
    each one resumes from the trial's last checkpoint too.

    `shared_train_run`: train all `replicates` seeds of a configuration (and of a control) one after
    another in one Tune trial and one Ray Train run, instead of one trial per seed. The worker
    processes then start once per configuration, not once per seed (their imports are most of a
    trial's fixed costs; bench/seed_runs.py), but a configuration's seeds no longer train side by
    side, so Optuna hears each configuration later. Each seed keeps its own MLflow run, checkpoint
    and evaluation, with the same numbers either way.
    """

    algorithm: Literal["tpe", "nsga2", "random", "grid"] = "tpe"
    num_samples: PositiveInt = 8
    replicates: PositiveInt = 1
    control: bool = False
    max_concurrent: PositiveInt = 1
    seed: Annotated[int, Field(ge=0)] = 0
    max_failures: Annotated[int, Field(ge=0)] = 1
    worker_restarts: Annotated[int, Field(ge=0)] = 1
    shared_train_run: bool = False
    time_budget_s: Annotated[float, Field(gt=0)] | None = None

    @property
    def shares_train_runs(self) -> bool:
        """Whether a Tune trial trains several seeds (`shared_train_run` with more than one replicate)."""
        return self.shared_train_run and self.replicates > 1


#: URI schemes a trial storage may use: those pyarrow's filesystems (and so Ray Train) understand.
#: `file://` is a local folder addressed as a URI: it is read back through pyarrow like a remote store.
TRIAL_STORAGE_SCHEMES = ("s3", "gs", "gcs", "hdfs", "abfs", "abfss", "file")


class ResourceSpec(_Strict):
    """Per-trial resources: Ray Train workers, each with CPUs and a (fractional) GPU share."""

    workers_per_trial: PositiveInt = 1
    cpus_per_worker: Annotated[float, Field(gt=0)] = 1
    gpus_per_worker: Annotated[float, Field(ge=0)] = 0


class TrackingSpec(_Strict):
    """Where the search logs (MLflow). `max_outage_s`: how long an unreachable tracking server is
    waited for where the search must read it (the end of the search, a retried trial's run); writes
    never wait: they are buffered and replayed in order (ncsearch/_tracking_buffer.py)."""

    uri: str | None = None
    experiment: str | None = None
    max_outage_s: Annotated[float, Field(gt=0)] = 600.0


class SearchSpec(_Strict):
    """A whole search space, as written in one YAML file."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")]
    description: str = ""
    model: PathStr = "minilm-l6"
    #: Run Python code the model's checkpoint ships (config.json `auto_map`). Off: such a model is
    #: refused in one line before anything starts, and no checkpoint's code is ever imported.
    trust_remote_code: bool = False
    baseline: searchable(Literal[BASELINES]) = "mlm"  # type: ignore[valid-type]
    baseline_options: BaselineOptions = BaselineOptions()
    train: TrainSpec = TrainSpec()
    nc3: NC3Spec = NC3Spec()
    eval: EvalSpec = EvalSpec()
    objectives: Annotated[list[Objective], Field(min_length=2)]
    search: SearchAlgoSpec = SearchAlgoSpec()
    resources: ResourceSpec = ResourceSpec()
    tracking: TrackingSpec = TrackingSpec()
    data_dir: PathStr | None = None
    storage: PathStr = "runs"
    #: Where trials' Ray Train runs keep their checkpoints and evaluation folders: a folder every node
    #: mounts (NFS) or a URI that pyarrow reaches from every node (s3://bucket/prefix, gs://...).
    #: Unset: `<storage>/<name>/trials`, on the driver's node (one machine, or a shared `storage`).
    trial_storage: str | None = None

    @field_validator("trial_storage")
    @classmethod
    def _known_storage_scheme(cls, value: str | None) -> str | None:
        if value is None or "://" not in value:
            return value
        scheme = value.split("://", 1)[0]
        if scheme not in TRIAL_STORAGE_SCHEMES:
            raise ValueError(f"unsupported scheme {scheme!r}; use a folder or one of: "
                             + ", ".join(f"{s}://" for s in TRIAL_STORAGE_SCHEMES))
        return value.rstrip("/")

    @model_validator(mode="after")
    def _paper_preset(self) -> SearchSpec:
        """nc3.preset 'paper' for this baseline (before `_cross_checks`, which reads nc3.alpha): the NC3
        settings and alpha, and the baseline's own `paper_options` (ASE as the paper ran it: its extra
        terms off) unless its options set those keys otherwise (an error)."""
        self.nc3.apply_paper_preset(self.baseline)
        if self.nc3.preset == "paper" and isinstance(self.baseline, str):
            from ncsearch.debias import get_baseline

            paper = get_baseline(self.baseline).paper_options
            current = getattr(self.baseline_options, self.baseline)
            given = {k: getattr(current, k) for k in current.model_fields_set}
            for key, value in paper.items():
                if key in given and given[key] != value:
                    raise ValueError(f"nc3.preset 'paper' runs baseline {self.baseline!r} with {key}={value!r}, as the "
                                     f"paper's code does; remove baseline_options.{self.baseline}.{key}={given[key]!r}")
            if paper:
                setattr(self.baseline_options, self.baseline, type(current).model_validate({**given, **paper}))
        return self

    @model_validator(mode="after")
    def _nc3_pass_has_positions(self) -> SearchSpec:
        """A method whose NC3 features come from its own unmasked pass (MABEL, ADEPT) has no masked
        positions to select: nc3.positions must be 'all' for it."""
        from ncsearch.debias import get_baseline

        baselines = self.baseline.args if isinstance(self.baseline, Distribution) else (self.baseline,)
        positions = self.nc3.positions.args if isinstance(self.nc3.positions, Distribution) else (self.nc3.positions,)
        unmasked = [b for b in baselines if get_baseline(b).nc3_pass == "unmasked"]
        if unmasked and "masked" in positions:
            raise ValueError(
                f"baseline {', '.join(map(repr, unmasked))} feeds NC3 from its own unmasked pass, which has no "
                "masked positions; set nc3.positions: all"
            )
        return self

    @model_validator(mode="after")
    def _cross_checks(self) -> SearchSpec:
        names = self.eval.benchmark_names()
        for i, obj in enumerate(self.objectives):
            if obj.is_delta and not self.search.control:
                raise ValueError(f"objectives[{i}].metric {obj.metric!r} is a difference against the control, "
                                 "but search.control is false; set search.control: true")
            bench = obj.base_metric.split("/", 1)[0]
            if bench not in names:
                raise ValueError(
                    f"objectives[{i}].metric {obj.metric!r} needs benchmark {bench!r}, "
                    f"which the eval suite does not run (it runs: {', '.join(names)})"
                )
        metrics = [o.metric for o in self.objectives]
        if len(set(metrics)) != len(metrics):
            raise ValueError(f"objectives repeat a metric: {metrics}")
        dists = self.distributions()
        if self.search.algorithm == "grid":
            bad = [k for k, d in dists.items() if d.kind not in ("grid", "choice")]
            if bad:
                raise ValueError(f"algorithm 'grid' needs grid/choice distributions only; not: {', '.join(bad)}")
        else:
            bad = [k for k, d in dists.items() if d.kind == "grid"]
            if bad:
                raise ValueError(f"'grid' distributions need search.algorithm: grid (found at {', '.join(bad)})")
        if self.search.control and _always_zero(self.nc3.alpha):
            raise ValueError("search.control trains an alpha = 0 twin of every configuration, but nc3.alpha is "
                             "fixed at 0 here: each trial would be its own control; search alpha or drop search.control")
        if self.train.precision == "fp16" and self.resources.gpus_per_worker == 0:
            raise ValueError("train.precision: fp16 needs a CUDA GPU (resources.gpus_per_worker > 0); float16 "
                             "autocast on CPU is emulated and several times slower than fp32: use bf16 or fp32")
        sources = self.nc3.vocab.source
        uses_file = sources == "file" or (isinstance(sources, Distribution) and "file" in sources.args)
        if uses_file and not self.nc3.vocab.file:
            raise ValueError("nc3.vocab.source 'file' needs nc3.vocab.file")
        return self

    # ----- searched fields ---------------------------------------------------------------------

    def distributions(self) -> dict[str, Distribution]:
        """Every searched field as {dotted.path: Distribution}, in declaration order."""
        return dict(_walk_distributions(self, ""))

    def is_concrete(self) -> bool:
        return not self.distributions()

    def resolve(self, values: Mapping[str, Any]) -> SearchSpec:
        """A copy with the searched fields set to `values` ({dotted.path: value}); must leave none open."""
        data = self.to_dict()
        for dotted, value in values.items():
            _set_dotted(data, dotted.split("."), value)
        spec = parse_spec(data, source="<resolved trial>")
        if not spec.is_concrete():
            raise ConfigError(f"<resolved trial>: still searched: {', '.join(spec.distributions())}")
        return spec

    def to_dict(self) -> dict[str, Any]:
        """Plain data (distributions as their YAML mapping) that `parse_spec` reads back."""
        return _plain(self)

    # ----- replicates and controls ---------------------------------------------------------------

    def for_replicate(self, replicate: int) -> SearchSpec:
        """The same run with training seed `train.seed + replicate` (data order, masks, dropout and the
        initialisation of new parameters all follow it)."""
        return self.model_copy(update={"train": self.train.model_copy(update={"seed": self.train.seed + replicate})})

    def as_control(self) -> SearchSpec:
        """The same run without the regularizer (alpha = 0); the NC3 statistics are still kept, so
        train-time UNC3 is still reported. The copy is one run, not a search of controls."""
        return self.model_copy(update={"nc3": self.nc3.model_copy(update={"alpha": 0.0}),
                                       "search": self.search.model_copy(update={"control": False})})

    def control_key(self) -> str:
        """A content hash of what a run trains and evaluates, without the NC3 fields and the seed: runs
        with the same key differ only in the regularizer, so one alpha = 0 control (per seed) serves
        them all."""
        import hashlib
        import json

        data = self.to_dict()
        content = {key: data[key] for key in _RUN_FIELDS}
        content["train"] = {k: v for k, v in content["train"].items() if k != "seed"}
        text = json.dumps(_canonical_numbers(content), sort_keys=True, default=str)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


#: The fields of a spec that change what one run trains or measures (the rest names and schedules runs).
_RUN_FIELDS = ("model", "baseline", "baseline_options", "train", "eval", "resources", "data_dir")


def _canonical_numbers(value: Any) -> Any:
    """Integers as floats, so that `0` and `0.0` (a YAML int and a validated float) hash alike."""
    if isinstance(value, dict):
        return {k: _canonical_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_canonical_numbers(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _always_zero(value: Any) -> bool:
    """True when a (possibly searched) alpha can only be 0."""
    if isinstance(value, Distribution):
        if value.kind in ("choice", "grid"):
            return all(v == 0 for v in value.args)
        return value.args[1] == 0
    return value == 0


def _walk_distributions(model: BaseModel, prefix: str) -> Iterator[tuple[str, Distribution]]:
    for name in type(model).model_fields:
        value = getattr(model, name)
        path = f"{prefix}{name}"
        if isinstance(value, Distribution):
            yield path, value
        elif isinstance(value, BaseModel):
            yield from _walk_distributions(value, path + ".")


def _plain(value: Any) -> Any:
    """Plain data from models, walking fields directly (model_dump would flatten Distribution)."""
    if isinstance(value, BaseModel):
        return {name: _plain(getattr(value, name)) for name in type(value).model_fields}
    if isinstance(value, Distribution):
        return value.to_yaml()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _set_dotted(data: dict[str, Any], keys: list[str], value: Any) -> None:
    node = data
    for key in keys[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[keys[-1]] = value


# ----- loading, with YAML line numbers --------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads YAML 1.2 floats such as `1e-4` (PyYAML's YAML 1.1 makes them strings)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


class _LineIndex:
    """Maps YAML paths (tuples of keys and list indices) to 1-based line numbers."""

    def __init__(self, root: yaml.Node | None):
        self.lines: dict[tuple[Any, ...], int] = {}
        self.duplicates: list[tuple[tuple[Any, ...], int]] = []
        if root is not None:
            self._walk(root, ())

    def _walk(self, node: yaml.Node, path: tuple[Any, ...]) -> None:
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            seen: set[Any] = set()
            for key_node, value_node in node.value:
                key = key_node.value
                if key in seen:
                    self.duplicates.append((path + (key,), key_node.start_mark.line + 1))
                seen.add(key)
                self.lines[path + (key,)] = key_node.start_mark.line + 1
                self._walk(value_node, path + (key,))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self._walk(item, path + (i,))

    def line(self, loc: tuple[Any, ...]) -> int | None:
        for end in range(len(loc), -1, -1):
            if loc[:end] in self.lines:
                return self.lines[loc[:end]]
        return None


def _dotted(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<top level>"


def _clean_loc(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    # pydantic adds union/function markers such as 'function-plain[parse()]' to locations.
    return tuple(p for p in loc if not (isinstance(p, str) and ("[" in p or p.startswith("function-"))))


def _format_problems(err: ValidationError, source: str, index: _LineIndex) -> list[str]:
    problems = []
    for e in err.errors():
        loc = _clean_loc(tuple(e["loc"]))
        line = index.line(loc)
        where = f"{source}:{line}" if line else source
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = f"unknown key {loc[-1]!r}"
        elif e["type"] == "missing":
            msg = "required key is missing"
        elif e["type"] not in ("value_error", "assertion_error") and "input" in e and not isinstance(e["input"], dict):
            msg = f"{msg} (got {e['input']!r})"
        problems.append(f"{where}: {_dotted(loc)}: {msg}")
    return problems


def parse_spec(data: Any, *, source: str = "<data>", index: _LineIndex | None = None, base_dir: Path | None = None) -> SearchSpec:
    """Validate plain data into a SearchSpec; raise ConfigError listing every problem."""
    index = index or _LineIndex(None)
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: the top level must be a mapping of keys, got {type(data).__name__}")
    try:
        spec = SearchSpec.model_validate(dict(data))
    except ValidationError as err:
        raise ConfigError(_format_problems(err, source, index)) from None
    _check_files(spec, source, index, base_dir)
    return spec


def _check_files(spec: SearchSpec, source: str, index: _LineIndex, base_dir: Path | None) -> None:
    """Paths named in the file must exist; relative ones are taken from the YAML file's folder."""
    problems = []

    def check(loc: tuple[str, ...], value: str | None, *, want_dir: bool) -> str | None:
        if value is None:
            return None
        path = Path(value).expanduser()
        if not path.is_absolute() and base_dir is not None and not path.exists():
            path = base_dir / path
        ok = path.is_dir() if want_dir else path.is_file()
        if not ok:
            line = index.line(loc)
            where = f"{source}:{line}" if line else source
            kind = "folder" if want_dir else "file"
            problems.append(f"{where}: {_dotted(loc)}: {kind} not found: {value!r}")
            return None
        return str(path.resolve())

    spec.nc3.vocab.file = check(("nc3", "vocab", "file"), spec.nc3.vocab.file, want_dir=False) or spec.nc3.vocab.file
    spec.data_dir = check(("data_dir",), spec.data_dir, want_dir=True) or spec.data_dir
    if _looks_like_path(spec.model):
        resolved = check(("model",), spec.model, want_dir=True)
        spec.model = resolved or spec.model
    if problems:
        raise ConfigError(problems)


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or name.endswith(("/",))


def load_spec(path: str | Path, overrides: list[str] | None = None) -> SearchSpec:
    """Read, validate and return the search space in `path`, after `--set key=value` overrides."""
    path = Path(path)
    source = str(path)
    if path.is_dir():
        raise ConfigError(f"{source}: is a folder, not a search-space YAML file")
    if not path.is_file():
        raise ConfigError(f"{source}: file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{source}: not a text file (byte {err.start} is not UTF-8)") from None
    except OSError as err:
        raise ConfigError(f"{source}: cannot read it ({err.strerror})") from None
    try:
        root = yaml.compose(text, Loader=_Loader)
        data = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{source}{line}: invalid YAML: {problem}") from None
    index = _LineIndex(root)
    if index.duplicates:
        raise ConfigError([f"{source}:{line}: {_dotted(loc)}: duplicate key" for loc, line in index.duplicates])
    if data is None:
        raise ConfigError(f"{source}: the file is empty")
    if overrides:
        data = apply_overrides(data, overrides)
    return parse_spec(data, source=source, index=index, base_dir=path.parent.resolve())


def apply_overrides(data: Any, overrides: list[str]) -> dict[str, Any]:
    """Apply `key.path=value` strings (value parsed as YAML) to a copy of `data`."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"cannot apply overrides to a {type(data).__name__}")
    out = copy.deepcopy(dict(data))
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected key.path=value")
        try:
            value = yaml.load(raw, Loader=_Loader) if raw.strip() else ""
        except yaml.YAMLError:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML") from None
        _set_dotted(out, key.strip().split("."), value)
    return out


def describe(spec: SearchSpec) -> str:
    """A short human summary of what a spec searches, used by `ncsearch validate`."""
    configurations = spec.search.num_samples
    if spec.search.algorithm == "grid" and "num_samples" not in spec.search.model_fields_set:
        import math

        configurations = math.prod(len(d.args) for d in spec.distributions().values())
    lines = [f"search space {spec.name!r}: model {spec.model}, {spec.search.algorithm} x {configurations} configurations"]
    dists = spec.distributions()
    if dists:
        lines.append("searched:")
        for key, dist in dists.items():
            lines.append(f"  {key}: {dist.kind} {list(dist.args)}")
    else:
        lines.append("searched: nothing (every field fixed)")
    lines.append("objectives: " + ", ".join(f"{o.mode} {o.metric}" for o in spec.objectives))
    runs = f"{spec.search.replicates} seed(s) per configuration"
    if spec.search.control:
        runs += ", each with a seed-matched alpha = 0 control"
    if spec.search.shares_train_runs:
        runs += "; a configuration's seeds train one after another in one Ray Train run"
    lines.append(f"runs: {runs}")
    lines.append("eval: " + ", ".join(spec.eval.benchmark_names()))
    return "\n".join(lines)

