"""What ``dste run`` is asked to do: :class:`RunConfig`, its checks, and the dataset and budget spellings it reads.

Every option of ``dste run`` is a field here; the constructor refuses a bad value with a message that names the
option and what it accepts, before any work starts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dste.checks import flag
from dste.controller import RewardConfig
from dste.data.graph import is_integer

__all__ = ["RunConfig", "csbm_spec", "fp32_budget_fraction", "CSBM_PREFIX", "DEFAULT_FP32_TEACHERS", "FP32_SNAPSHOTS",
           "MIN_SNAPSHOTS", "MODEL_KINDS", "RUN_TARGETS"]

MODEL_KINDS = ("gcn", "sage")


MIN_SNAPSHOTS = 4
"""The fewest snapshots a run takes: at least one held out and several to train on."""


MAX_MODEL_SEED = 2**32 - 1
"""The largest ``--model-seed``: its teachers' seeds are derived from it (``dste.gnn.teacher_seeds``)."""

FLAG_FIELDS = ("quick", "progress", "fallback", "probe", "oracle", "frontier", "overwrite")
"""The fields that are True or False (``dste run``'s switches)."""


QUICK_SNAPSHOTS = 6
"""A ``--quick`` run's snapshots (at most; one more where a bursty stream would otherwise hold out no burst)."""


@dataclass
class RunConfig:
    """The options of one ``dste run`` (``dste run --help`` explains each); checked and normalised on construction."""

    dataset: str = "cora-like"
    root: str | None = None
    seeds: int = 3
    snapshots: int | None = None  # None: by graph size, see dste.experiments.sizing.schedule_for
    episodes: int | None = None
    model: str = "gcn"
    hidden: int = 64
    epochs: int = 200
    lambda_latency: float = 0.05
    budget: float | str | None = "static50"
    budget_penalty: float = 5.0
    target: str = "trn2"
    timing_repeats: int = 3
    out: str | None = None
    quick: bool = False
    progress: bool = True
    stream: str = "steady"
    stream_seed: int | None = 0  # None: each seed s draws its own stream s
    model_seed: int | None = None  # None: each seed s trains its own FP32 model s; an int: one model for all
    fallback: bool = True
    probe: bool = True  # the fitted plan's more valuable unmeasured rivals are checked on each snapshot (projection)
    oracle: bool = False
    frontier: bool = True
    jobs: int | str = 1  # "auto": as many as the memory holds, the count finishing the seeds soonest (sizing.auto_jobs)
    fp32_snapshots: str = "first"  # "first": FP32 trained on snapshot 0; "training": on every training snapshot
    # > 0: each seed's FP32 model is distilled from that many teachers (train_fp32_distilled); None: DEFAULT_FP32_TEACHERS
    # where the model trains on the first snapshot, 0 (plain training) with fp32_snapshots="training"
    fp32_teachers: int | None = None
    overwrite: bool = False  # True: an --out directory that holds an earlier run's results.json is written over

    def __post_init__(self) -> None:
        for name in FLAG_FIELDS:  # a truthy string such as 'no' ran as True: overwrite='no' replaced a run
            flag(getattr(self, name), name)
        if self.quick:
            self.seeds = min(self.seeds, 1)
            self.snapshots = min(QUICK_SNAPSHOTS if self.snapshots is None else self.snapshots, QUICK_SNAPSHOTS)
            self.episodes = min(100 if self.episodes is None else self.episodes, 100)
            self.epochs = min(self.epochs, 60)
        for name in ("seeds", "episodes", "hidden", "epochs", "timing_repeats", "jobs"):
            value = getattr(self, name)
            if (name == "episodes" and value is None) or (name == "jobs" and value == "auto"):
                continue
            if not is_integer(value) or value < 1:
                also = " or 'auto'" if name == "jobs" else ""
                raise ValueError(f"--{name.replace('_', '-')} must be a positive integer{also}, got {value!r}")
            setattr(self, name, int(value))  # a NumPy integer is a count too
        if self.snapshots is not None and (not isinstance(self.snapshots, int) or self.snapshots < MIN_SNAPSHOTS):
            raise ValueError(
                f"--snapshots must be an integer >= {MIN_SNAPSHOTS} (at least one held-out and several training "
                f"snapshots), got {self.snapshots!r}"
            )
        if self.model not in MODEL_KINDS:
            raise ValueError(f"--model must be one of {MODEL_KINDS}, got {self.model!r}")
        if self.target not in RUN_TARGETS:
            raise ValueError(f"target must be one of {RUN_TARGETS} (the kernel gathers rows with indirect DMAs, "
                             f"NeuronCore-v3 and newer), got {self.target!r}")
        from dste.data.stream import STREAM_PRESETS, snapshots_with_heldout_burst

        if not isinstance(self.dataset, str) or not self.dataset.strip():
            raise ValueError(f"--dataset must name a dataset, got {self.dataset!r}")
        from dste.data.csbm import PRESETS

        if self.dataset[:len(CSBM_PREFIX)].lower() == CSBM_PREFIX and not self.dataset.startswith(CSBM_PREFIX):
            raise ValueError(f"--dataset {self.dataset!r}: a generated graph's spec starts with '{CSBM_PREFIX}' in "
                             "lower case")
        if self.root is not None and (self.dataset.lower() in PRESETS or self.dataset.startswith(CSBM_PREFIX)):
            # it was ignored, and results.json recorded it as where the graph came from
            raise ValueError(f"--root is read by datasets loaded from files (Planetoid, OGB, .npz); "
                             f"{self.dataset!r} is generated, so leave --root out")
        if self.out is not None and not str(self.out).strip():
            raise ValueError("--out must name a directory (leave it out for ./runs/<timestamp>), got ''")
        if self.fp32_snapshots not in FP32_SNAPSHOTS:
            raise ValueError(f"--fp32-snapshots must be one of {FP32_SNAPSHOTS}, got {self.fp32_snapshots!r}")
        if self.fp32_teachers is None:
            self.fp32_teachers = DEFAULT_FP32_TEACHERS if self.fp32_snapshots == "first" else 0
        if isinstance(self.fp32_teachers, bool) or not isinstance(self.fp32_teachers, int) or self.fp32_teachers < 0:
            raise ValueError(f"--fp32-teachers must be an integer >= 0 (0: no distillation), got {self.fp32_teachers!r}")
        if self.fp32_teachers and self.fp32_snapshots != "first":
            raise ValueError("--fp32-teachers distils a model trained on the first snapshot; it does not combine with "
                             f"--fp32-snapshots {self.fp32_snapshots}")
        if self.stream not in STREAM_PRESETS:
            raise ValueError(f"--stream must be one of {sorted(STREAM_PRESETS)}, got {self.stream!r}")
        for name in ("stream_seed", "model_seed"):  # None: 'per-seed'
            value = getattr(self, name)
            if value is not None and (not is_integer(value) or value < 0):
                raise ValueError(f"--{name.replace('_', '-')} must be an integer >= 0 or 'per-seed', got {value!r}")
        if self.model_seed is not None and self.model_seed > MAX_MODEL_SEED:
            # the teachers' seeds derive from it (x 1,000) and must stay within the seeds torch takes
            raise ValueError(f"--model-seed must be at most {MAX_MODEL_SEED:,} (2^32 - 1), got {self.model_seed}")

        if isinstance(self.budget, str):
            if self.budget.strip().lower() == "none":
                self.budget = None
            elif self.budget.lower().endswith("fp32"):
                fraction = fp32_budget_fraction(self.budget)
                # the shortest spelling that reads back as the same float: '{:g}' cut 0.1234567 to 0.123457
                self.budget = f"{np.format_float_positional(fraction, trim='-')}fp32"
            elif self.budget.lower() == "static50":
                self.budget = "static50"  # the job compares it as spelled here
            else:
                spelled = self.budget
                try:
                    self.budget = float(self.budget)
                except ValueError:
                    self.budget = float("nan")
                if not (np.isfinite(self.budget) and self.budget > 0):
                    raise ValueError(
                        f"--budget must be 'static50', 'none', '<x>fp32' (a fraction of the FP32 latency, e.g. "
                        f"0.33fp32) or a positive fraction of the uniform-INT8 latency, got {spelled!r}"
                    ) from None
        preset = STREAM_PRESETS[self.stream][0]
        if self.quick and self.snapshots == QUICK_SNAPSHOTS:
            # a bursty smoke run judged on quiet snapshots only would show nothing of bursts
            self.snapshots = snapshots_with_heldout_burst(preset, QUICK_SNAPSHOTS)
        if (preset.budget_cycle or preset.budget_slo) and not (
                self.budget == "static50" or (isinstance(self.budget, str) and self.budget.endswith("fp32"))):
            # the stream's own budget replaces it: it was ignored, and results.json recorded it as the run's
            raise ValueError(f"--stream {self.stream} sets its own latency budget, so --budget "
                             f"{'none' if self.budget is None else self.budget} would be ignored: leave --budget out, "
                             "or give '<x>fp32', which replaces the stream's")
        numeric_budget = None if isinstance(self.budget, str) else self.budget
        try:  # validates lambda, budget and penalty, named as the options that set them
            RewardConfig(self.lambda_latency, numeric_budget, self.budget_penalty)
        except (TypeError, ValueError) as error:
            message = str(error).replace("lambda_latency", "--lambda").replace("budget_penalty", "--budget-penalty")
            raise ValueError(message) from None


FP32_SNAPSHOTS = ("first", "training")
"""What each seed's FP32 model trains on: the stream's first snapshot (the default, every table of the README), or
every training snapshot in turn (``dste.gnn.train_fp32_on_snapshots``; ``bench/fp32_stream_training.py`` measures
both)."""

DEFAULT_FP32_TEACHERS = 4
"""Teachers each seed's FP32 model is distilled from where ``--fp32-teachers`` is not given (0 is plain training, the
published GCN recipe). With 20 labelled nodes per class a plainly trained model lands where its initialisation puts
it, and the controller compressing it inherits that seed-to-seed spread; a model fitted to four others' mean
prediction lands closer to the next seed's (bench/README.md, "the FP32 model distilled from an ensemble")."""


def fp32_budget_fraction(budget: str) -> float:
    """The x of a '<x>fp32' budget (a latency ceiling of x times the FP32 model's modelled latency)."""
    text = str(budget).strip().lower()
    try:
        fraction = float(text[: -len("fp32")])
    except ValueError:
        raise ValueError(f"--budget '{budget}': expected '<x>fp32' with a number x > 0, e.g. 0.33fp32") from None
    if not (np.isfinite(fraction) and fraction > 0):
        raise ValueError(f"--budget '{budget}': the fraction of the FP32 latency must be > 0, got {fraction}")
    return fraction


CSBM_PREFIX = "csbm:"


CSBM_REAL_KNOBS = ("homophily", "locality", "mu", "degree_sigma", "community_shift", "class_concentration",
                   "edge_shortfall_limit")
"""The fields of dste.data.CSBMParams a 'csbm:' spec reads as real numbers; the others (but ``name`` and
``community_size``) are whole numbers."""


def csbm_spec(spec: str) -> dict:
    """Generator knobs of a 'csbm:key=value,...' dataset (keys of dste.data.CSBMParams, and make_graph's
    ``edge_shortfall_limit``; base = cora-like). ``community_size=MIN-MAX`` gives the range of community sizes."""
    from dste.data import CSBMParams

    # the generator's own knob beside the graph's: how far short of num_edges a small block model may fall
    allowed = list(CSBMParams.__dataclass_fields__) + ["edge_shortfall_limit"]
    knobs: dict = {}
    body = spec[len(CSBM_PREFIX):]
    items = [part.strip() for part in body.split(",") if part.strip()]
    if not items:
        raise ValueError(f"--dataset {spec!r}: a 'csbm:' spec names at least one key=value (keys of CSBMParams: "
                         f"{', '.join(allowed)}); for the default graph use 'cora-like'")
    for item in items:
        key, sep, value = (part.strip() for part in item.partition("="))
        if not sep or key not in allowed:
            raise ValueError(f"--dataset {spec!r}: {item!r} is not key=value with a key of CSBMParams "
                             f"({', '.join(allowed)})")
        if key in knobs:
            raise ValueError(f"--dataset {spec!r}: {key} is given twice")
        if key == "name":
            knobs[key] = value
        elif key == "community_size":
            low, dash, high = value.partition("-")
            if not (dash and low.isdecimal() and high.isdecimal()):  # isdigit took '²', which int() refused
                raise ValueError(f"--dataset {spec!r}: community_size must be MIN-MAX in whole nodes (e.g. 16-64), "
                                 f"got {value!r}")
            knobs[key] = (int(low), int(high))
        else:
            try:
                number = float(value)
            except ValueError:
                raise ValueError(f"--dataset {spec!r}: {key} must be a number, got {value!r}") from None
            if key in CSBM_REAL_KNOBS:
                knobs[key] = number
            elif number.is_integer():
                knobs[key] = int(number)
            else:
                raise ValueError(f"--dataset {spec!r}: {key} must be a whole number, got {value!r}")
    return knobs


RUN_TARGETS = ("trn2",)
"""NeuronCores whose latency ``dste run`` models: those the kernel runs on (trn1 has no indirect DMA)."""
