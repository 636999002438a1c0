"""swarm.toml: what a swarm is, as one typed record (`SwarmSpec`).

A swarm folder's spec is written once, when the swarm is planned (or imported), and read by the
worker that trains its runs, by the pipeline that fits and proposes from it, and by the CLI and
the app that show it. Its fields are the dataclasses below and nothing else: a new field is added
here, with a default so older files still load, and `from_toml` checks every file against it
(unknown keys, wrong types, a layout that does not add up) with an error naming the file.

Three purposes share the record:
  swarm    a planned swarm: mixtures sampled over units (free leaves and frozen groups)
  verify   verification runs: labelled leaf mixtures, each trained with several seeds
  import   results trained elsewhere (ratios.csv / metrics.csv): units are the CSV's domains
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from engine.config import Table, load_section, read_toml
from engine.errors import ConfigError, OlmixError
from engine.settings import SwarmSettings
from engine.swarm import FrozenGroup, unit_layout

SPEC_FILE = "swarm.toml"
PURPOSES = ("swarm", "verify", "import")
RUN_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
"""A trained run's id, its folder's name under runs/ (planned ids look like "<swarm id>-0007")."""


@dataclass(frozen=True)
class ProxyScale(Table):
    """[proxy]: the proxy every run of the swarm trains: olmix.toml's [proxy] when the swarm was
    planned, with the token budget resolved, plus the swarm's repetition cap and the training
    FLOPs per token (for compute reports)."""

    preset: str
    tokens_per_proxy: int
    chinchilla_multiple: float
    eval_tokens_per_domain: int
    eval_every: int
    seed: int
    dtype: str
    max_repetition: float
    flops_per_token: float


@dataclass(frozen=True)
class SwarmData(Table):
    """[data]: the token-store entry of each leaf the swarm was planned on (its key), the
    tokenizer's vocabulary size, and the eval sets (name -> file in the project) every run scores."""

    vocab_size: int
    keys: dict[str, str]
    eval_sets: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ImportSource(Table):
    """[source]: the CSV files an imported swarm was read from."""

    ratios: str
    metrics: str


@dataclass(frozen=True)
class SwarmSpec(Table):
    """A swarm folder's swarm.toml.

    purpose: swarm | verify | import; plan: the update plan kind (full, full_reuse, partial_reuse),
    or "verify" / "import"; units: the swarm's columns (free leaves, then frozen groups; an imported
    swarm's domains); runs: the run ids, each the name of its folder under runs/ (an imported swarm's
    runs are the rows of its ratios.csv, so it lists none here). Trained swarms also have leaves (the leaf domains), groups
    (frozen groups with their fixed ratios), prior (the natural distribution over the leaves), proxy
    and data; a planned swarm its sampler settings (swarm), verification runs their labels (one per
    mixture); an imported swarm its source, and when they were given on import its prior (from
    --prior, or the token shares of --tokens; empty: the swarm's mean mixture is taken) and its
    domains' available training tokens (tokens, from --tokens; empty: no repetition caps).
    """

    purpose: str = "swarm"
    plan: str = "full"
    units: list[str] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)
    leaves: list[str] = field(default_factory=list)
    groups: list[FrozenGroup] = field(default_factory=list)
    prior: dict[str, float] = field(default_factory=dict)
    swarm: SwarmSettings | None = None
    proxy: ProxyScale | None = None
    data: SwarmData | None = None
    labels: list[str] = field(default_factory=list)
    source: ImportSource | None = None
    tokens: dict[str, float] = field(default_factory=dict)

    def validate(self) -> None:
        if self.purpose not in PURPOSES:
            raise ConfigError(f"purpose '{self.purpose}' is unknown; it is one of {', '.join(PURPOSES)}.")
        if not self.units or len(set(self.units)) != len(self.units):
            raise ConfigError("units must be a non-empty list of distinct names; plan or import the swarm again.")
        if self.purpose == "import":
            if self.source is None:
                raise ConfigError("an imported swarm needs its [source]; import it again.")
            for name, values in (("prior", self.prior), ("tokens", self.tokens)):
                if values and (set(values) != set(self.units) or min(values.values()) < 0):
                    raise ConfigError(f"{name} must give each of the units a value >= 0; import the swarm again.")
            return
        if not self.runs or len(set(self.runs)) != len(self.runs):
            raise ConfigError("runs must be a non-empty list of distinct names; plan the swarm again.")
        bad = next((r for r in self.runs if not RUN_RE.match(r)), None)
        if bad is not None:
            raise ConfigError(f"run id {bad[:60]!r} is not a folder name this tool writes; plan the swarm again.")
        if self.proxy is None or self.data is None:
            raise ConfigError(f"a {self.purpose} swarm needs [proxy] and [data]; plan the swarm again.")
        missing = [x for x in self.leaves if x not in self.data.keys or x not in self.prior]
        if missing or not self.leaves:
            raise ConfigError(f"leaf '{missing[0] if missing else '(none)'}' has no token-store key or prior; "
                              "plan the swarm again.")
        try:
            units = unit_layout(self.leaves, self.groups)[0]
        except OlmixError as err:
            raise ConfigError(f"groups do not fit the leaves ({err}); plan the swarm again.") from None
        if units != self.units:
            raise ConfigError(f"units {self.units} are not the ones its leaves and groups give ({units}); "
                              "plan the swarm again.")
        if self.purpose == "verify" and not self.labels:
            raise ConfigError("verification runs need the labels of their mixtures; plan them again.")

    @property
    def trained_here(self) -> bool:
        """Planned and trained by this project (a swarm or verification runs), not imported."""
        return self.purpose != "import"

    @cached_property
    def expand(self) -> np.ndarray:
        """[leaves, units]: a unit mixture z gives the leaf mixture expand @ z (identity for an import)."""
        if not self.trained_here:
            return np.eye(len(self.units))
        return unit_layout(self.leaves, self.groups)[1]

    @classmethod
    def from_toml(cls, data: dict, file: str) -> "SwarmSpec":
        """The spec in a parsed swarm.toml; anything that does not fit is a ConfigError naming `file`."""
        return load_section(cls, data, file)

    @classmethod
    def read(cls, path: Path) -> "SwarmSpec":
        return cls.from_toml(read_toml(path), str(path))

    def to_toml(self) -> dict:
        """Plain data for swarm.toml (None fields are left out of the file)."""
        return dataclasses.asdict(self)
