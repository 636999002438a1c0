"""olmix.toml: one frozen dataclass per table, checked when it is loaded (or made in code).

Every table derives from `engine.config.Table`: its `validate()` raises a ConfigError naming the
key and the fix, so a value no run could use fails when the project loads, not later inside a
worker. Checks that involve two tables live in `Settings.validate`. This module imports no numerical
library (reading a project, `--help` and every worker start with it); the code a table configures
imports it from here.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from engine.config import Table, dump_section, load_section, read_toml, refuse, seed_problem
from engine.domains import check_name, outside_project
from engine.errors import ConfigError
from engine.training.presets import AUTO as AUTO_PRESET, DTYPES, PRESETS as PROXY_PRESETS

SETTINGS_FILE = "olmix.toml"


# ---------------------------------------------------------------- [project]


@dataclass(frozen=True)
class ProjectInfo(Table):
    """[project]. name: shown in reports.

    Older projects wrote a `seed` here that nothing read; loading accepts and drops it (each table
    that draws random numbers has its own seed).
    """

    retired = ("seed",)

    name: str = "mix"


# ---------------------------------------------------------------- [tokenizer], [data]

TOKENIZER_KINDS = ("bpe", "hf", "bytes")
MAX_TRAIN_BYTES = 10**11


@dataclass(frozen=True)
class TokenizerSettings(Table):
    """[tokenizer].

    kind: "bpe" trains a byte-level BPE on the project's data; "hf" loads a local Hugging Face
      tokenizer folder (offline); "bytes" uses the 256 byte values plus an EOS token.
    vocab_size: BPE vocabulary size (with the EOS token).
    path: for "bpe", where the trained tokenizer.json is kept (a folder inside the project: it is
      written there); for "hf", the local tokenizer folder (it is only read, so it may be outside).
    train_bytes: how many bytes of the project's data (spread over domains) train the BPE.
    """

    kind: str = "bpe"
    vocab_size: int = 4096
    path: str = "tokenizer"
    train_bytes: int = 4_000_000

    def validate(self) -> None:
        if self.kind not in TOKENIZER_KINDS:
            raise ConfigError(f"kind '{self.kind}' is unknown; use one of {', '.join(TOKENIZER_KINDS)}.")
        if self.kind == "bpe" and not 300 <= self.vocab_size <= 1_000_000:
            raise ConfigError(f"vocab_size is {self.vocab_size}; use between 300 and 1000000.")
        refuse((not 10_000 <= self.train_bytes <= MAX_TRAIN_BYTES,
                f"train_bytes is {self.train_bytes}; use between 10000 and {MAX_TRAIN_BYTES}"),
               (self.kind == "bpe" and (not self.path or outside_project(self.path)),
                f"path '{self.path}' is not a folder inside the project, where the trained tokenizer is written; "
                "give a relative path without '..' (e.g. \"tokenizer\")"))


@dataclass(frozen=True)
class DataSettings(Table):
    """[data].

    val_fraction: share of each domain's documents held out for validation (chosen by content hash).
    eval_sets: name -> JSON-lines file of {"context", "continuation"} pairs (relative to the project),
      scored as bits per byte of the continuation.
    external_sources: false (the default) refuses domain sources and eval sets outside the project
      folder (absolute paths, '..', symlinks leading out), so that a domains.toml or olmix.toml from
      someone else cannot make the tool read, and train into tokenizer.json (kept in git), files of
      this machine. true allows them, with a warning each time data is read: such files are not
      versioned with the project.
    """

    val_fraction: float = 0.05
    eval_sets: dict[str, str] = field(default_factory=dict)
    external_sources: bool = False

    def validate(self) -> None:
        if not 0.0 < self.val_fraction < 0.5:
            raise ConfigError(f"val_fraction must be between 0 and 0.5 (got {self.val_fraction}); fix it.")
        for name, path in self.eval_sets.items():
            check_name(name, "eval_sets", "eval set")
            refuse((not path, f"eval_sets.{name} is empty; give the eval set's file, relative to the project"),
                   (outside_project(path) and not self.external_sources,
                    f"eval_sets.{name} = '{path}' is outside the project folder; copy the file into the project "
                    "or set external_sources = true"))


# ---------------------------------------------------------------- [proxy]

MAX_TOKENS = 10**15
"""More tokens than any run trains (a bound that keeps a typo from overflowing counts)."""


@dataclass(frozen=True)
class ProxySettings(Table):
    """[proxy]: how each proxy of a swarm is trained.

    preset: "auto" (the cpu preset when the swarm trains on CPUs; on GPUs the gpu preset, with at
        least presets.GPU_TOKENS_PER_PROXY tokens), or the name of a ProxyPreset
        (engine/training/presets.py: "cpu", "gpu", "regmix-1m", "olmix-30m", "olmix-60m"). A swarm
        records the preset and token budget it resolved to when it was planned.
    tokens_per_proxy: training tokens per proxy; 0 means chinchilla_multiple decides.
    chinchilla_multiple: when tokens_per_proxy is 0, tokens = chinchilla_multiple * 20 * N where
        N is the preset's non-embedding parameter count (blocks + final norm, no embedding, no
        head). The default 0.2 gives the cpu preset ~1.7M tokens, above the ~1M where mixture
        signal beats seed noise on CPU (NOTES-cpu-scale.md); raise it for GPU presets.
    eval_tokens_per_domain: held-out tokens per domain scored for loss / BPB (first tokens of
        each domain's validation split).
    eval_every: steps between curve points (train loss, lr, held-out metrics); 0 = only at the end.
        Each point scores eval_tokens_per_domain tokens of every domain, so keep points sparse
        (with the cpu preset, 1000 steps = 512k training tokens per proxy).
    seed: the seed of every proxy run of a swarm (its weights' initialisation and its data order):
        runs differ by their mixtures only. Verification runs use seed, seed + 1, ... per mixture.
    dtype: "auto" (bfloat16 autocast on CUDA and on CPUs with bfloat16 instructions, AVX512-BF16 or
        AMX; float32 on other CPUs), "float32" or "bfloat16".
    """

    preset: str = AUTO_PRESET
    tokens_per_proxy: int = 0
    chinchilla_multiple: float = 0.2
    eval_tokens_per_domain: int = 32_768
    eval_every: int = 1000
    seed: int = 0
    dtype: str = "auto"

    def validate(self) -> None:
        if self.preset != AUTO_PRESET and self.preset not in PROXY_PRESETS:
            raise ConfigError(f"preset '{self.preset}' is unknown; use one of {', '.join([AUTO_PRESET, *PROXY_PRESETS])}.")
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype '{self.dtype}' is unknown; use one of {', '.join(DTYPES)}.")
        if self.tokens_per_proxy < 0 or self.chinchilla_multiple < 0:
            raise ConfigError("tokens_per_proxy and chinchilla_multiple must be >= 0; fix them.")
        if self.eval_tokens_per_domain < 1 or self.eval_every < 0:
            raise ConfigError("eval_tokens_per_domain must be at least 1 and eval_every >= 0; fix them.")
        refuse((self.tokens_per_proxy > MAX_TOKENS, f"tokens_per_proxy is {self.tokens_per_proxy}; use at most {MAX_TOKENS}"),
               (self.chinchilla_multiple > 1000, f"chinchilla_multiple is {self.chinchilla_multiple}; use at most 1000"),
               (self.eval_tokens_per_domain > MAX_TOKENS,
                f"eval_tokens_per_domain is {self.eval_tokens_per_domain}; use at most {MAX_TOKENS}"),
               seed_problem("seed", self.seed))


# ---------------------------------------------------------------- [swarm]

SAMPLERS = ("olmix", "regmix")
MAX_SWARM_RUNS = 100_000
"""The most proxy runs a planned swarm may have (runs_per_domain x units is checked when it is planned)."""


@dataclass(frozen=True)
class SwarmSettings(Table):
    """[swarm]: how the swarm's mixtures are sampled (engine/swarm.py).

    Keys left out of the table take the chosen sampler's values (`SwarmSettings.preset`); the
    plain defaults below are the ``olmix`` preset.

    Fields:
        sampler: "olmix" or "regmix": whose sampling loop to run (see engine/swarm.py).
        size: number of mixtures (proxy runs); 0 = ``runs_per_domain`` x number of units.
        runs_per_domain: runs per unit when ``size`` is 0. Olmix found swarms linear in the number of
            domains sufficient; 4 because the log-linear regression fits about u + 2 parameters per
            metric, so 4u runs leave ~3 runs per parameter even after holding out a fifth for testing.
        temperature: exponent on the prior before sampling, prior ** temperature renormalised, as in
            both papers' code: 1 keeps the natural distribution, < 1 flattens it (RegMix uses 0.5),
            > 1 sharpens it.
        min_strength / max_strength: ends of the 15-level log-spaced grid of Dirichlet strengths
            (alpha = strength * prior); each draw uses one level. Equal ends = a single strength.
        min_weight: weights below it are set to 0 and the rest renormalised; a nonzero weight in the
            swarm is never below it.
        grid: after sparsification weights are rounded to multiples of 1/grid summing to exactly 1
            (largest remainder); 0 = 1/min_weight, as both papers round to multiples of the minimum
            (no rounding when min_weight is 0 too).
        max_repetition: repetition cap at proxy scale: weight_j * tokens_per_proxy must not exceed
            max_repetition * train_tokens_j for every leaf j.
        forced: units that must get at least min_weight (and more than 0) in every mixture.
        prior: manual prior over all units (free leaves and group names), replacing the natural
            distribution; empty = natural distribution.
        dedup_tolerance: a draw within this L1 distance of an accepted mixture is rejected
            (0 disables; the papers' 1e-5 removes exact duplicates only).
        seed: random seed; the same settings and inputs give the same swarm.
    """

    sampler: str = "olmix"
    size: int = 0
    runs_per_domain: int = 4
    temperature: float = 1.0
    min_strength: float = 0.1
    max_strength: float = 5.0
    min_weight: float = 2e-3
    grid: int = 0
    max_repetition: float = 5.0
    forced: list[str] = field(default_factory=list)
    prior: dict[str, float] = field(default_factory=dict)
    dedup_tolerance: float = 1e-5
    seed: int = 42

    @classmethod
    def preset(cls, sampler: str = "olmix", **overrides) -> "SwarmSettings":
        """The named paper's settings with `overrides` applied (keys of the [swarm] table)."""
        if sampler not in SWARM_PRESETS:
            raise ConfigError(f"sampler '{sampler}' is unknown; use one of {', '.join(SAMPLERS)}.")
        unknown = sorted(set(overrides) - {f.name for f in fields(cls)})
        if unknown:
            raise ConfigError(f"unknown key(s) {', '.join(unknown)}; remove them.")
        return replace(SWARM_PRESETS[sampler], **overrides)

    @classmethod
    def from_section(cls, **section) -> "SwarmSettings":
        """Load the [swarm] table: the chosen sampler's preset with the table's keys applied."""
        return cls.preset(**section)

    def validate(self) -> None:
        problems = [
            (self.sampler not in SAMPLERS, f"sampler '{self.sampler}' is unknown; use one of {', '.join(SAMPLERS)}"),
            (self.size < 0, f"size {self.size} is smaller than 1; use a positive size or 0 for automatic"),
            (self.runs_per_domain < 1, f"runs_per_domain {self.runs_per_domain} must be at least 1"),
            (not self.temperature > 0, f"temperature {self.temperature} must be positive"),
            (not 0 < self.min_strength <= self.max_strength <= 1e6,
             f"strengths must satisfy 0 < min_strength <= max_strength <= 1000000 (got {self.min_strength}, "
             f"{self.max_strength})"),
            (not 0 <= self.min_weight < 1, f"min_weight {self.min_weight} must be in [0, 1)"),
            (self.grid < 0, f"grid {self.grid} must be 0 (automatic) or positive"),
            (not self.max_repetition > 0, f"max_repetition {self.max_repetition} must be positive"),
            (not self.dedup_tolerance >= 0, f"dedup_tolerance {self.dedup_tolerance} must be 0 or more"),
            (self.size > MAX_SWARM_RUNS, f"size {self.size} is more than {MAX_SWARM_RUNS} runs; use a smaller swarm"),
            (self.runs_per_domain > MAX_SWARM_RUNS,
             f"runs_per_domain {self.runs_per_domain} is more than {MAX_SWARM_RUNS}; use a smaller number"),
            (self.grid > 10**9, f"grid {self.grid} must be at most 1000000000"),
            (any(not math.isfinite(w) or w < 0 for w in self.prior.values()),
             "prior weights must be finite and >= 0; fix them"),
            seed_problem("seed", self.seed),
        ]
        refuse(*problems)

    def grid_steps(self) -> int:
        """Rounding grid: `grid`, else 1/min_weight, else 0 (no rounding)."""
        if self.grid:
            return self.grid
        return round(1 / self.min_weight) if self.min_weight > 0 else 0


SWARM_PRESETS: dict[str, SwarmSettings] = {
    "olmix": SwarmSettings(sampler="olmix"),
    "regmix": SwarmSettings(sampler="regmix", temperature=0.5, min_weight=2e-4, max_repetition=15.0),
}


# ---------------------------------------------------------------- [executor]

EXECUTOR_KINDS = ("local", "slurm", "ray")


@dataclass(frozen=True)
class ExecutorSettings(Table):
    """[executor]: where proxies train (engine/executors/).

    kind: "local" (worker processes on this machine), "slurm" (one Slurm job per batch of runs,
        submitted through submitit) or "ray" (one Ray task per batch). On a cluster the project
        folder and the Python environment must be visible on the nodes (a shared filesystem).
    device: "auto" (every GPU, else the CPU), "cpu", or "cuda".
    workers: CPU workers (0 = one per core, each single-threaded: tiny proxies use a core best
        in a process of their own).
    threads: torch threads per CPU worker (0 = the machine's cores / workers).
    max_batch: at most this many proxies trained together by one worker (one batched computation);
        a swarm's runs are split into at least one batch per slot, so every GPU or worker has work.
    poll_seconds: how often progress is read from the run files (at most 60).
    slurm_*: used when kind = "slurm". slurm_max_jobs: jobs at once (the slots); slurm_gpus_per_job:
        1 (the job's proxies train on its GPU) or 0 (CPU jobs); slurm_cpus_per_job: cores (and torch
        threads) per job; slurm_mem_gb: memory per job (0 = the partition's default);
        slurm_timeout_min: the jobs' time limit; slurm_partition, slurm_account: as for sbatch
        ("" = the cluster's default); slurm_setup: shell lines run before the worker (e.g.
        "source ~/venvs/olmix/bin/activate"); slurm_extra: more sbatch options ({"qos" = "low"});
        slurm_cluster: "slurm" (sbatch), or "local" to run the same submitit jobs as processes on
        this machine (a check of the setup without a cluster). slurm_setup lines are shell commands
        run as you by the next `swarm run` with kind = "slurm" (on this machine, too, with
        slurm_cluster = "local"): read them after pulling someone else's olmix.toml.
    ray_*: used when kind = "ray". ray_address: "" (a Ray instance on this machine, for the run),
        "auto" (the cluster this machine belongs to) or "ray://head:10001"; ray_gpus_per_task: 1 or
        0 (CPU tasks); ray_cpus_per_task: cores (and torch threads) per task; ray_max_tasks: tasks at
        once (0 = one per GPU, or per ray_cpus_per_task cores, of the cluster).
    """

    kind: str = "local"
    device: str = "auto"
    workers: int = 0
    threads: int = 0
    max_batch: int = 16
    poll_seconds: float = 0.5
    slurm_max_jobs: int = 4
    slurm_gpus_per_job: int = 1
    slurm_cpus_per_job: int = 8
    slurm_mem_gb: int = 0
    slurm_timeout_min: int = 240
    slurm_partition: str = ""
    slurm_account: str = ""
    slurm_setup: list[str] = field(default_factory=list)
    slurm_extra: dict[str, str] = field(default_factory=dict)
    slurm_cluster: str = "slurm"
    ray_address: str = ""
    ray_gpus_per_task: int = 1
    ray_cpus_per_task: int = 1
    ray_max_tasks: int = 0

    def validate(self) -> None:
        if self.kind not in EXECUTOR_KINDS:
            raise ConfigError(f"kind '{self.kind}' is unknown; use one of {', '.join(EXECUTOR_KINDS)}.")
        if self.ray_gpus_per_task not in (0, 1):
            raise ConfigError("ray_gpus_per_task must be 1 (a GPU per task) or 0 (CPU tasks); fix it.")
        if self.ray_cpus_per_task < 1 or self.ray_max_tasks < 0:
            raise ConfigError("ray_cpus_per_task must be >= 1 and ray_max_tasks >= 0; fix them.")
        if self.slurm_cluster not in ("slurm", "local"):
            raise ConfigError(f"slurm_cluster '{self.slurm_cluster}' is unknown; use 'slurm' (sbatch) or 'local' "
                              "(a check on this machine).")
        if self.slurm_gpus_per_job not in (0, 1):
            raise ConfigError("slurm_gpus_per_job must be 1 (a GPU per job) or 0 (CPU jobs); "
                              "raise slurm_max_jobs to train on more GPUs at once.")
        if min(self.slurm_max_jobs, self.slurm_cpus_per_job, self.slurm_timeout_min) < 1 or self.slurm_mem_gb < 0:
            raise ConfigError("slurm_max_jobs, slurm_cpus_per_job and slurm_timeout_min must be >= 1 and "
                              "slurm_mem_gb >= 0; fix them.")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"device '{self.device}' is unknown; use auto, cpu or cuda.")
        if self.max_batch < 1 or self.workers < 0 or self.threads < 0 or not self.poll_seconds > 0:
            raise ConfigError("max_batch must be >= 1, workers and threads >= 0 and poll_seconds > 0; fix them.")
        refuse((self.poll_seconds > 60, f"poll_seconds is {self.poll_seconds}; use at most 60"),
               (max(self.workers, self.threads, self.max_batch, self.slurm_cpus_per_job, self.ray_cpus_per_task) > 4096,
                "workers, threads, max_batch, slurm_cpus_per_job and ray_cpus_per_task must be at most 4096; fix them"),
               (max(self.slurm_max_jobs, self.ray_max_tasks) > 100_000,
                "slurm_max_jobs and ray_max_tasks must be at most 100000; fix them"),
               (max(self.slurm_timeout_min, self.slurm_mem_gb) > 10**6,
                "slurm_timeout_min and slurm_mem_gb must be at most 1000000; fix them"))


# ---------------------------------------------------------------- [regression]

REGRESSOR_NAMES = ("auto", "ensemble", "gp", "lightgbm", "loglinear", "powerlaw", "ridge")
"""Every regressor's name, known without importing them (their modules pull in torch, LightGBM, scikit-learn)."""
DEFAULT_CANDIDATES = ["loglinear", "lightgbm", "gp", "ridge", "powerlaw"]
"""What auto chooses among and ensemble averages by default."""
DEFAULT_RIDGE = [1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0]
"""The log-linear fit's ridge penalties per run, among which inner cross-validation chooses."""


@dataclass(frozen=True)
class RegressionSettings(Table):
    """[regression]: which regressor to fit and how (engine/regression/).

    Fields:
        regressor: loglinear, lightgbm, ridge, gp, powerlaw, ensemble (average of `candidates`) or
            auto (chosen among `candidates` by cross-validation).
        folds: K of the K-fold cross-validation reported with every fit (and used by auto).
        seed: seed of the CV folds and of every regressor's randomness.
        candidates: regressors auto chooses among (and ensemble averages).
        ensemble: whether auto may also pick an average of its best candidates.
        loglinear_inits: random initialisations per metric of the log-linear law (Olmix uses 300).
        loglinear_relative_delta: Huber delta of the log-linear fit, in units of each metric's
            standard deviation over the runs (Olmix used a fixed 0.02 whatever the metric's scale).
            Older files' `loglinear_delta` (that absolute value) is accepted and dropped.
        loglinear_ridge: ridge penalties (per run) on the log-linear law's coefficients t as the runs
            weigh them, mean_runs (t . x)^2 for the law of the metric over its standard deviation;
            inner 5-fold cross-validation picks one per metric (the largest within one standard
            error of the best), which keeps a fit on few runs from running to saturation. The
            smallest default, 1e-5, bounds the law where runs barely pin a coefficient; [0.0] turns
            the penalty off.
        loglinear_iterations: Levenberg-Marquardt iterations of the log-linear fit.
        lightgbm_learning_rate: LightGBM learning rate (RegMix: 0.01).
        lightgbm_rounds: maximum boosting rounds (RegMix: 1000).
        lightgbm_patience: early-stopping patience in rounds (RegMix: 3).
        lightgbm_valid_fraction: share of training runs held out for early stopping (0 = none).
        lightgbm_bags: LightGBM models per metric, each with its own held-out split, averaged.
        lightgbm_threads: LightGBM threads (small data: 1 is fastest on a shared machine).
        gp_max_opt_points: runs used to tune the Gaussian process kernel.
        powerlaw_inits: random initialisations per metric of the power law.
    """

    retired = ("loglinear_delta",)

    regressor: str = "auto"
    folds: int = 5
    seed: int = 0
    candidates: list[str] = field(default_factory=lambda: list(DEFAULT_CANDIDATES))
    ensemble: bool = True
    loglinear_inits: int = 32
    loglinear_relative_delta: float = 1.0
    loglinear_ridge: list[float] = field(default_factory=lambda: list(DEFAULT_RIDGE))
    loglinear_iterations: int = 100
    lightgbm_learning_rate: float = 0.01
    lightgbm_rounds: int = 1000
    lightgbm_patience: int = 3
    lightgbm_valid_fraction: float = 0.125
    lightgbm_bags: int = 4
    lightgbm_threads: int = 1
    gp_max_opt_points: int = 192
    powerlaw_inits: int = 8

    def validate(self) -> None:
        if self.regressor not in REGRESSOR_NAMES:
            raise ConfigError(f"regressor '{self.regressor}' is unknown; use one of {', '.join(REGRESSOR_NAMES)}.")
        bad = [c for c in self.candidates if c not in REGRESSOR_NAMES or c in ("auto", "ensemble")]
        if bad or not self.candidates:
            raise ConfigError(
                f"candidates {bad or '[]'} are not usable; list some of "
                f"{', '.join(sorted(set(REGRESSOR_NAMES) - {'auto', 'ensemble'}))}."
            )
        if self.folds < 2:
            raise ConfigError(f"folds is {self.folds}; use 2 or more.")
        at_least_one = ("loglinear_inits", "loglinear_iterations", "lightgbm_rounds", "lightgbm_patience",
                        "lightgbm_bags", "lightgbm_threads", "powerlaw_inits")
        refuse(*[(not 1 <= getattr(self, k) <= 100_000, f"{k} is {getattr(self, k)}; use between 1 and 100000")
                 for k in at_least_one],
               (self.folds > 1000, f"folds is {self.folds}; use at most 1000"),
               (not 0 < self.loglinear_relative_delta <= 1000,
                f"loglinear_relative_delta is {self.loglinear_relative_delta}; use a number in (0, 1000]"),
               (not self.loglinear_ridge or any(not 0 <= x <= 1e6 for x in self.loglinear_ridge),
                f"loglinear_ridge is {self.loglinear_ridge}; list penalties between 0 and 1e6 (e.g. [0.0] for none)"),
               (not 0 < self.lightgbm_learning_rate <= 1,
                f"lightgbm_learning_rate is {self.lightgbm_learning_rate}; use a number in (0, 1]"),
               (not 0 <= self.lightgbm_valid_fraction < 1,
                f"lightgbm_valid_fraction is {self.lightgbm_valid_fraction}; use a number in [0, 1)"),
               (self.gp_max_opt_points < 2, f"gp_max_opt_points is {self.gp_max_opt_points}; use 2 or more"),
               seed_problem("seed", self.seed))

    def regressor_settings(self, name: str) -> dict[str, Any]:
        """Keyword settings for make_regressor(name)."""
        singles = {
            "loglinear": {"inits": self.loglinear_inits, "delta": self.loglinear_relative_delta,
                          "ridge": list(self.loglinear_ridge),
                          "iterations": self.loglinear_iterations, "seed": self.seed},
            "lightgbm": {"learning_rate": self.lightgbm_learning_rate, "rounds": self.lightgbm_rounds,
                         "patience": self.lightgbm_patience, "valid_fraction": self.lightgbm_valid_fraction,
                         "bags": self.lightgbm_bags, "threads": self.lightgbm_threads, "seed": self.seed},
            "gp": {"max_opt_points": self.gp_max_opt_points, "seed": self.seed},
            "ridge": {},
            "powerlaw": {"inits": self.powerlaw_inits, "seed": self.seed},
        }
        if name in singles:
            return singles[name]
        members = {c: singles[c] for c in self.candidates}
        if name == "ensemble":
            return {"members": list(self.candidates), "member_settings": members}
        return {"candidates": list(self.candidates), "folds": self.folds, "seed": self.seed,
                "ensemble": self.ensemble, "member_settings": members}

    def cv_kwargs(self, name: str) -> dict[str, Any]:
        """Keyword arguments of cross_validate(name, X, Y, **kwargs): folds, seed and the regressor's settings."""
        return {**self.regressor_settings(name), "folds": self.folds, "seed": self.seed}


# ---------------------------------------------------------------- [objective], [propose]

PROPOSERS = ("exact", "simulation", "search")
DEFAULT_KL_REG = 0.05
"""The default pull towards the prior: Olmix's configs use 0.05 to 0.1. Without it (and without
caps) the exact proposer may put a quarter of the mixture on a domain holding 0.2% of the tokens
(RegMix's released swarm)."""
MAX_KL_REG = 1000.0
"""Past this weight the KL term swamps any predicted gain (the proposal is the prior) and the
exact solver's residuals stop meaning anything."""
EXACT_REGRESSOR = "loglinear"
"""The exact proposer solves the log-linear law's problem, so it needs a fit by this regressor."""


def usable_proposer(proposer: str, regressor: str, fitted: str = "") -> tuple[str, str]:
    """The proposer that can run on a fit by `regressor` (`fitted`: what it fitted, for the note),
    and a note when that is not `proposer`: the exact proposer needs a log-linear fit, and on any
    other fit simulation stands in for it."""
    if proposer == "exact" and regressor != EXACT_REGRESSOR:
        return "simulation", (f"the exact proposer needs a log-linear fit; this is {fitted or regressor}, so the "
                              "simulation proposer stands in (a fit with --regressor loglinear proposes exactly). ")
    return proposer, ""


@dataclass(frozen=True)
class ObjectiveSettings(Table):
    """[objective]: what the proposed mixture should minimise.

    Fields:
        weights: metric name -> weight of that predicted metric in the objective (a weighted
            average; metrics are losses, lower is better). Empty: every metric weighs the same.
    """

    weights: dict[str, float] = field(default_factory=dict)

    def validate(self) -> None:
        values = list(self.weights.values())
        if values and (any(not math.isfinite(w) or w < 0 for w in values) or not sum(values) > 0):
            raise ConfigError("weights must be finite, >= 0 and not all 0; fix them.")

    def names_none_of(self, metric_names: list[str]) -> bool:
        """Whether the weights name none of `metric_names` (none set, or a swarm imported with metrics
        of its own): every metric then weighs the same."""
        return not any(name in metric_names for name in self.weights)

    def normalised(self, metric_names: list[str]) -> list[float]:
        """The weight of each of `metric_names`, summing to 1: equal weights when the weights name none
        of them; a weight for a metric the fit lacks while others match is refused (a typo)."""
        if self.names_none_of(metric_names):
            return [1.0 / len(metric_names)] * len(metric_names)
        unknown = [name for name in self.weights if name not in metric_names]
        if unknown:
            raise ConfigError(
                f"Objective weight for unknown metric '{unknown[0]}'; the fit's metrics are {', '.join(metric_names)}."
            )
        w = [self.weights.get(name, 0.0) for name in metric_names]
        if not sum(w) > 0:
            raise ConfigError("Objective weights put no weight on the fit's metrics; fix [objective] weights.")
        return [x / sum(w) for x in w]


@dataclass(frozen=True)
class ProposeSettings(Table):
    """[propose]: how the target run's mixture is chosen (engine/propose.py).

    Fields:
        proposer: "exact" (Olmix, needs a log-linear fit), "simulation" (RegMix, any fit) or "search"
            (best observed swarm run).
        target_tokens: tokens of the target run; 0 turns the repetition caps off.
        repetition_factor: R, the most times a domain's available tokens may be repeated:
            x_j <= R * tokens_j / target_tokens.
        kl_reg: lambda, weight of KL(mixture || prior) added to the objective (0 = none; the
            default, DEFAULT_KL_REG, is the low end of Olmix's 0.05-0.1).
        bounds: leaf domain -> [lo, hi] bounds on its weight.
        simulation_candidates: Dirichlet candidates the simulation proposer draws.
        top_k: the simulation proposer averages its k best feasible candidates.
        bootstrap: replicates of the swarm (runs resampled with replacement, refitted, proposed
            again) behind each proposal's intervals (engine/bootstrap.py); 0 = none.
        seed: seed of the simulation proposer's candidates and of the bootstrap's draws.
    """

    proposer: str = "exact"
    target_tokens: int = 0
    repetition_factor: float = 5.0
    kl_reg: float = DEFAULT_KL_REG
    bounds: dict[str, list[float]] = field(default_factory=dict)
    simulation_candidates: int = 100_000
    top_k: int = 100
    bootstrap: int = 200
    seed: int = 0

    def validate(self) -> None:
        if self.bootstrap < 0:
            raise ConfigError(f"bootstrap is {self.bootstrap}; use 0 (none) or a number of replicates.")
        if self.proposer not in PROPOSERS:
            raise ConfigError(f"proposer '{self.proposer}' is unknown; use one of {', '.join(PROPOSERS)}.")
        if self.target_tokens < 0 or self.repetition_factor <= 0 or self.kl_reg < 0:
            raise ConfigError("target_tokens and kl_reg must be >= 0 and repetition_factor > 0; fix [propose].")
        if self.simulation_candidates < 1 or self.top_k < 1:
            raise ConfigError("simulation_candidates and top_k must be at least 1; fix [propose].")
        refuse((self.kl_reg > MAX_KL_REG, f"kl_reg is {self.kl_reg}; use at most {MAX_KL_REG:g} (larger values "
                                          "only return the prior, with an inaccurate solve)"),
               (self.target_tokens > MAX_TOKENS, f"target_tokens is {self.target_tokens}; use at most {MAX_TOKENS}"),
               (self.repetition_factor > 1e6, f"repetition_factor is {self.repetition_factor}; use at most 1000000"),
               (self.bootstrap > 100_000, f"bootstrap is {self.bootstrap}; use at most 100000 replicates"),
               (self.simulation_candidates > 10**7,
                f"simulation_candidates is {self.simulation_candidates}; use at most 10000000"),
               (self.top_k > self.simulation_candidates,
                f"top_k is {self.top_k}, more than the {self.simulation_candidates} simulation_candidates; lower it"),
               seed_problem("seed", self.seed))
        for name, pair in self.bounds.items():
            if len(pair) != 2 or not 0 <= pair[0] <= pair[1] <= 1:
                raise ConfigError(f"bounds.{name} is {pair}; give [lo, hi] with 0 <= lo <= hi <= 1.")


# ---------------------------------------------------------------- [reuse]

PLAN_KINDS = ("full", "full_reuse", "partial_reuse")
VIRTUAL_NAME = "virtual:unaffected"


UPDATE_KINDS = ("add", "revise", "partition", "remove")
KL_CENTRES = ("prior", "natural", "current")


@dataclass(frozen=True)
class ReuseSwarmSettings(Table):
    """[reuse.swarm]: how a reuse swarm (one with a frozen virtual domain) is sampled.

    The defaults are what Olmix's mixture-reuse case study used for its reuse swarms: a manual
    prior that gives the virtual domain (the mixture the project already has) a large share, strong
    Dirichlet concentrations so most runs stay near that prior, and every unit in every run, so the
    fit sees each new domain at small weights instead of runs that are almost one unit alone. Keys
    not here (sampler, grid, max_repetition, dedup_tolerance, seed) come from [swarm]; the
    temperature is 1, so the stated share is the prior's.

    Fields:
        virtual_share: the prior's share on the virtual domain (Olmix used 0.7 to 0.98); the rest
            goes to the free units in proportion to their natural distribution.
        min_strength / max_strength: ends of the Dirichlet strength grid (Olmix: 1 to 20).
        min_weight: the smallest weight a unit gets in any run (Olmix: 1e-4).
        force_all: every unit gets at least min_weight in every run (Olmix's nonzero_weight).
        runs_per_domain: runs per unit (default 3, one fewer than [swarm]'s default: the runs sit
            near one mixture, and Olmix's reuse swarms had 1 to 8 per unit; 3 still leaves a 2-unit
            revise 6 runs, enough for 5-fold cross-validation); size: runs of a reuse swarm (0 =
            runs_per_domain x units). Both 0: [swarm]'s size and runs_per_domain.
    """

    virtual_share: float = 0.75
    min_strength: float = 1.0
    max_strength: float = 20.0
    min_weight: float = 1e-4
    force_all: bool = True
    runs_per_domain: int = 3
    size: int = 0

    def validate(self) -> None:
        if not 0 < self.virtual_share < 1:
            raise ConfigError(f"virtual_share is {self.virtual_share}; use a share between 0 and 1 (Olmix used 0.7-0.98).")
        if self.runs_per_domain < 0 or self.size < 0:
            raise ConfigError("runs_per_domain and size must be 0 (automatic) or positive; fix them.")

    def swarm_settings(self, base: SwarmSettings, units: list[str], prior: dict[str, float]) -> SwarmSettings:
        """The [swarm] settings of a reuse swarm over `units` whose prior is `prior` (every unit named)."""
        return replace(base, temperature=1.0, min_strength=self.min_strength, max_strength=self.max_strength,
                       min_weight=self.min_weight, grid=0, forced=list(units) if self.force_all else [],
                       prior=dict(prior), runs_per_domain=self.runs_per_domain or base.runs_per_domain,
                       size=self.size or (0 if self.runs_per_domain else base.size))


@dataclass(frozen=True)
class ReuseProposerSettings(Table):
    """[reuse.proposer]: how a reuse swarm's fit proposes (engine/propose.py).

    Fields:
        add, revise, partition, remove: the proposer for an update of that kind ("" = [propose]
            proposer); an update of several kinds uses [propose] proposer unless its kinds agree.
            Olmix's case study used search for its 2-unit revise: with one free unit next to the
            virtual one, the best measured run is as good a proposal as a fitted law.
        kl_centre: where the KL term of a reuse proposal is centred, over the units (the frozen
            group's internal ratios are fixed, so a KL over leaves would only count its total):
            "prior" (the reuse swarm's prior: virtual_share on the virtual domain, the natural
            distribution among the rest, as Olmix's reuse fits), "natural" (the natural distribution
            over the units) or "current" (the mixture the update starts from).
    """

    add: str = ""
    revise: str = "search"
    partition: str = ""
    remove: str = ""
    kl_centre: str = "prior"

    def validate(self) -> None:
        for kind in UPDATE_KINDS:
            name = getattr(self, kind)
            if name and name not in PROPOSERS:
                raise ConfigError(f"{kind} = '{name}' is unknown; use one of {', '.join(PROPOSERS)} or \"\" for [propose] proposer.")
        if self.kl_centre not in KL_CENTRES:
            raise ConfigError(f"kl_centre '{self.kl_centre}' is unknown; use one of {', '.join(KL_CENTRES)}.")

    def proposer_for(self, kinds: list[str], default: str) -> tuple[str, str]:
        """The proposer for an update of `kinds`, and the setting that chose it."""
        chosen = {getattr(self, k) for k in kinds}
        if len(chosen) == 1 and "" not in chosen:
            return chosen.pop(), f"[reuse.proposer] {'+'.join(kinds)}"
        return default, "[propose] proposer"


@dataclass(frozen=True)
class ReuseSettings(Table):
    """[reuse]: how a domain-set update is turned into a swarm (engine/reuse.py).

    Fields:
        plan: the default plan for an update: "full" (swarm over every leaf domain), "full_reuse"
            (unaffected domains frozen into one virtual domain) or "partial_reuse" (as full_reuse,
            with the `unfreeze` domains varied individually too).
        unfreeze: partial reuse: unaffected domains to unfreeze; empty = the top `suggest` domains
            of `suggest_unfreeze` on the last fit.
        suggest: partial reuse: how many domains to suggest unfreezing (0 = none).
        virtual_name: the name of the virtual domain holding the frozen unaffected domains; it must
            not be the name of a domain.
        swarm: [reuse.swarm], how reuse swarms are sampled.
        proposer: [reuse.proposer], how their fits propose.
    """

    plan: str = "full_reuse"
    unfreeze: list[str] = field(default_factory=list)
    suggest: int = 1
    virtual_name: str = VIRTUAL_NAME
    swarm: ReuseSwarmSettings = field(default_factory=ReuseSwarmSettings)
    proposer: ReuseProposerSettings = field(default_factory=ReuseProposerSettings)

    def validate(self) -> None:
        if self.plan not in PLAN_KINDS:
            raise ConfigError(f"plan '{self.plan}' is unknown; use one of {', '.join(PLAN_KINDS)}.")
        if self.suggest < 0:
            raise ConfigError(f"suggest is {self.suggest}; use 0 or more domains to suggest unfreezing.")
        for name in self.unfreeze:
            check_name(name, "unfreeze")
        check_name(self.virtual_name, "virtual_name")


# ---------------------------------------------------------------- the whole file


@dataclass(frozen=True)
class Settings(Table):
    """All of olmix.toml: one frozen dataclass per table; `validate` holds the checks across tables."""

    project: ProjectInfo = field(default_factory=ProjectInfo)
    tokenizer: TokenizerSettings = field(default_factory=TokenizerSettings)
    data: DataSettings = field(default_factory=DataSettings)
    proxy: ProxySettings = field(default_factory=ProxySettings)
    swarm: SwarmSettings = field(default_factory=SwarmSettings)
    executor: ExecutorSettings = field(default_factory=ExecutorSettings)
    regression: RegressionSettings = field(default_factory=lambda: RegressionSettings(regressor=EXACT_REGRESSOR))
    objective: ObjectiveSettings = field(default_factory=ObjectiveSettings)
    propose: ProposeSettings = field(default_factory=ProposeSettings)
    reuse: ReuseSettings = field(default_factory=ReuseSettings)

    def validate(self) -> None:
        if usable_proposer(self.propose.proposer, self.regression.regressor)[0] != self.propose.proposer:
            raise ConfigError(
                f"[propose] proposer = \"exact\" needs [regression] regressor = \"{EXACT_REGRESSOR}\" "
                f"(got \"{self.regression.regressor}\"); change one of them (e.g. proposer = \"simulation\")."
            )
        exact = [k for k in UPDATE_KINDS if getattr(self.reuse.proposer, k) == "exact"]
        if exact and self.regression.regressor != EXACT_REGRESSOR:
            raise ConfigError(
                f"[reuse.proposer] {exact[0]} = \"exact\" needs [regression] regressor = \"{EXACT_REGRESSOR}\" "
                f"(got \"{self.regression.regressor}\"); change one of them (e.g. {exact[0]} = \"simulation\")."
            )

    @classmethod
    def from_toml(cls, data: dict, file: str) -> "Settings":
        """Every table of `data` (a parsed olmix.toml): keys left out keep the project default
        ([swarm] fills them from its sampler's preset instead)."""
        hints = typing.get_type_hints(cls)
        defaults = {f.name: f.default_factory() for f in dataclasses.fields(cls)}  # type: ignore[misc]
        unknown = sorted(set(data) - set(defaults))
        if unknown:
            raise ConfigError(f"{file}: unknown table [{unknown[0]}]; known tables are {', '.join(defaults)}. "
                              "Remove it or fix its name.")
        kwargs = {}
        for name, default in defaults.items():
            value = data.get(name, {})
            if not isinstance(value, dict):
                raise ConfigError(f"{file}: '{name}' must be a table ([{name}]).")
            if not value:
                kwargs[name] = default
                continue
            section = dict(value) if hints[name] is SwarmSettings else {**dump_section(default), **value}
            kwargs[name] = load_section(hints[name], section, file, name)
        try:
            return cls(**kwargs)
        except ConfigError as err:
            raise ConfigError(f"{file}: {err}") from None

    def to_toml(self) -> dict:
        return {f.name: dump_section(getattr(self, f.name)) for f in dataclasses.fields(self)}


def read_settings(root: Path) -> Settings:
    """The settings of the project folder `root` (its olmix.toml)."""
    return Settings.from_toml(read_toml(Path(root) / SETTINGS_FILE), SETTINGS_FILE)
