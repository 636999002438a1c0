"""The current mixture in the formats training code reads: JSON, an OLMo-core style source mix, RegMix YAML.

The OLMo-core style mix gives each leaf its target ratio and the repetition factor the mixture
implies at the target scale (weight x target tokens / the leaf's tokens), capped by the
configured maximum, and the leaf's source paths.
"""

from __future__ import annotations

import json

from engine.atomic import round_floats
from engine.errors import OlmixError

FORMATS = ("json", "olmo", "regmix")


def _yaml_scalar(v) -> str:
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a valid YAML scalar
    return repr(v)


def export_mixture(fmt: str, mixture: dict[str, float], label: str, sources: dict[str, list[str]],
                   tokens: dict[str, int], target_tokens: int, max_repetition: float) -> str:
    """Render `mixture` (leaf -> weight) from history entry `label` in `fmt`."""
    mixture = round_floats({k: mixture[k] for k in sorted(mixture)})
    if fmt == "json":
        return json.dumps({"entry": label, "mixture": mixture}, indent=2, sort_keys=True) + "\n"
    if fmt == "olmo":
        lines = [f"# mixture {label}: OLMo-core style source mix (target {target_tokens:,} tokens)", "sources:"]
        for leaf, w in mixture.items():
            needed = w * target_tokens / tokens[leaf] if tokens.get(leaf) else 0.0
            lines += [
                f"  - source_name: {_yaml_scalar(leaf)}",
                f"    target_ratio: {w!r}",
                f"    max_repetition_ratio: {round(min(max(needed, 1.0), max_repetition), 4)!r}",
                "    paths: [" + ", ".join(_yaml_scalar(p) for p in sources.get(leaf, [])) + "]",
            ]
        return "\n".join(lines) + "\n"
    if fmt == "regmix":
        lines = [f"# mixture {label}: RegMix style config", "train:"]
        lines += [f"  {_yaml_scalar(leaf)}: {w!r}" for leaf, w in mixture.items()]
        return "\n".join(lines) + "\n"
    raise OlmixError(f"export format '{fmt}' is unknown; use one of {', '.join(FORMATS)}.")
