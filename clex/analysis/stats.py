"""Statistics for ablations (no torch here: analysis scripts import this).

A *variant* is a resolved config without its seed and the keys that only say where things go: runs of
one variant with different seeds are its samples, and two variants are never merged. Per variant and
evaluation length we report n, the mean of the per-seed PPL and a 95% Student-t interval,
``mean +- t(0.975, n-1) * sd / sqrt(n)``. Strategies of one seed share the base model and the evaluation
tokens, so "A beats B" is tested on the per-seed differences ``d_s = A(s) - B(s)`` (a paired interval).
"""

import math
from collections import Counter
from dataclasses import dataclass

from scipy import stats

from clex.config.identity import variant_config, variant_id
from clex.config.values import flat_keys

LEVEL = 0.95
INTERVAL_NOTE = (
    "mean ± half-width of the 95% Student-t interval over n seeds (t with n - 1 degrees of "
    "freedom), of the per-seed perplexities; n = 1: one seed, no interval"
)


@dataclass(frozen=True)
class Interval:
    mean: float
    n: int
    sd: float | None  # None for n = 1
    half_width: float | None  # None for n = 1: no interval

    @property
    def low(self):
        return None if self.half_width is None else self.mean - self.half_width

    @property
    def high(self):
        return None if self.half_width is None else self.mean + self.half_width

    @property
    def excludes_zero(self) -> bool:
        return self.half_width is not None and (self.low > 0 or self.high < 0)

    def format(self, digits: int = 2) -> str:
        if self.half_width is None:
            return f"{self.mean:.{digits}f} (1 seed, no interval)" if self.n == 1 else f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {self.half_width:.{digits}f}"


def mean_ci(values, level: float = LEVEL) -> Interval:
    """Mean and Student-t interval of finite values (at least one)."""
    values = [float(v) for v in values]
    if not values or not all(math.isfinite(v) for v in values):
        raise ValueError(f"mean_ci needs finite values, got {values}")
    n, mean = len(values), sum(values) / len(values)
    if n == 1:
        return Interval(mean, 1, None, None)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return Interval(mean, n, sd, float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n))


def paired_difference(a: dict, b: dict, level: float = LEVEL) -> Interval | None:
    """Interval of ``a[s] - b[s]`` over the seeds s both have (None when they share none)."""
    seeds = sorted(set(a) & set(b))
    return mean_ci([a[s] - b[s] for s in seeds], level) if seeds else None


def short_keys(keys: list[str]) -> dict:
    """Each dotted key by its shortest ending that no other key shares: ``steps`` alone, but ``base.steps`` and
    ``train.steps`` where both vary."""
    names = {}
    for key in keys:
        parts = key.split(".")
        for n in range(1, len(parts) + 1):
            ending = ".".join(parts[-n:])
            if not any(other != key and (other == ending or other.endswith("." + ending)) for other in keys):
                break
        names[key] = ending
    return names


def shown_value(value) -> str:
    """A value as a label shows it: floats to 4 significant digits (a sampled 1.6748913598497648 reads 1.675)."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def label_variants(results: list[dict], columns: tuple = ()) -> dict:
    """variant id -> "strategy key=value ...": the strategy and the keys that set variants of one
    strategy apart. ``columns``: keys shown elsewhere (a table column), left out of labels."""
    by_strategy = {}
    for r in results:
        by_strategy.setdefault(r["strategy"], {})[variant_id(r["config"])] = r
    labels, shown = {}, {}
    for strategy, variants in by_strategy.items():
        flats = {vid: flat_keys(variant_config(r["config"]), sections=False) for vid, r in variants.items()}
        keys = sorted({k for f in flats.values() for k in f})
        varying = [k for k in keys if len({str(f.get(k)) for f in flats.values()}) > 1 and k not in columns]
        # a key's most common value goes unsaid: "clex" is the default, "clex max_scale=16.0" an ablation
        common = {k: Counter(str(f.get(k)) for f in flats.values()).most_common() for k in varying}
        unsaid = {k: c[0][0] if c[0][1] > c[1][1] else "None" for k, c in common.items()}  # a tie: say every value
        names = short_keys(varying)
        for vid, flat in flats.items():
            labels[vid] = " ".join(
                [strategy]
                + [f"{names[k]}={shown_value(flat.get(k))}" for k in varying if unsaid.get(k) != str(flat.get(k))]
            )
            shown[vid] = (labels[vid], *(str(flat.get(c)) for c in columns))
    if len(set(shown.values())) < len(shown):  # two variants would look alike: name them apart
        labels = {vid: f"{label} [{vid}]" for vid, label in labels.items()}
    return labels


def group_variants(results: list[dict]) -> dict:
    """variant id -> its runs (one per seed), in the order variants first appear. A run seen twice (the
    same run collected from two paths) counts once."""
    groups = {}
    for r in results:
        runs = groups.setdefault(variant_id(r["config"]), {})
        runs.setdefault(r["seed"], r)
    return {vid: list(runs.values()) for vid, runs in groups.items()}


def ppl_by_seed(runs: list[dict], length: int, metric: str = "ppl") -> dict:
    """seed -> PPL at ``length`` for the runs that have a finite one (``metric="key_ppl"``: the key tokens')."""
    out = {}
    for r in runs:
        row = next((row for row in r["eval"] if row["length"] == length), None)
        if row is not None and row.get(metric) is not None and math.isfinite(row[metric]):
            out[r["seed"]] = row[metric]
    return out
