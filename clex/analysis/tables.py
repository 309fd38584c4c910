"""Tidy tables of runs and the power-law fit of the extrapolation length (for analysis/)."""

import csv
import io as stdio
import math
from pathlib import Path

import numpy as np

from clex.analysis.collection import collect as collect  # noqa: F401  (the readers' home; imported from here too)
from clex.analysis.collection import read_results as read_results  # noqa: F401
from clex.analysis.stats import mean_ci
from clex.errors import ConfigError, warn

COLUMNS = [
    "run",
    "strategy",
    "variant",
    "variant_id",
    "model",
    "parameters",
    "train_length",
    "original_length",
    "max_scale",
    "amplification",
    "projection_width",
    "seed",
    "length",
    "ppl",
    "nll",
    "tokens",
    "extrapolation_length",
    "censored",
    "protocol",
    "corpus",
    "tokenizer",
    "source",
]
SUMMARY_COLUMNS = [
    "variant",
    "variant_id",
    "strategy",
    "train_length",
    "length",
    "protocol",
    "n",
    "mean",
    "half_width",
    "low",
    "high",
    "seeds",
]
TASK_COLUMNS = [
    "run",
    "variant",
    "variant_id",
    "strategy",
    "seed",
    "train_length",
    "task",
    "length",
    "score",
    "metric",
]
TASK_SUMMARY_COLUMNS = [*SUMMARY_COLUMNS[:4], "task", "length", *SUMMARY_COLUMNS[6:]]  # task for protocol


def aggregate(rows: list[dict], value: str = "ppl", by: tuple[str, ...] = ("length",)) -> list[dict]:
    """Per variant and ``by`` (an evaluation length; a task and a length): n seeds, the mean of ``value`` and
    its 95% t-interval. A run whose value is missing or not finite is left out, with a warning naming it
    (it would poison the mean)."""
    groups = {}
    for r in rows:
        group = groups.setdefault(
            (r["variant_id"], *(r[k] for k in by)),
            {
                **{k: r[k] for k in ("variant", "variant_id", "strategy", "train_length", *by)},
                "protocol": r.get("protocol", "full"),
                "values": {},
            },
        )
        if r[value] is None or not math.isfinite(r[value]):
            where = ", ".join(f"{k} {r[k]}" for k in by)
            warn(f"run {r['run']} has {value.upper()} {r[value]} at {where}; left out of {r['variant']}")
            continue
        group["values"][r["seed"]] = r[value]
    out = []
    for group in groups.values():
        values = group.pop("values")
        if values:
            interval = mean_ci(list(values.values()))
            out.append(
                {
                    **group,
                    "n": interval.n,
                    "mean": interval.mean,
                    "half_width": interval.half_width,
                    "low": interval.low,
                    "high": interval.high,
                    "seeds": " ".join(map(str, sorted(values))),
                    "interval": interval,
                }
            )
    return out


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # a spreadsheet reads a cell that begins so as a formula


def inert(value):
    """A text cell a spreadsheet shows as text: one that begins like a formula gets a leading apostrophe
    (numbers are left as they are: -1.5 is a number, not a formula)."""
    return f"'{value}" if isinstance(value, str) and value.startswith(FORMULA_START) else value


def markdown_cell(text) -> str:
    """Text that stays inside one Markdown table cell: no pipe ends it, no newline starts a heading."""
    return " ".join(str(text).split()).replace("|", "\\|")


def csv_text(rows: list[dict], columns=COLUMNS) -> str:
    text = stdio.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows({k: inert(v) for k, v in row.items()} for row in rows)
    return text.getvalue()


def _number(value: str):
    if value in ("", "None"):
        return None
    if value in ("True", "False"):
        return value == "True"
    try:
        number = float(value)
    except ValueError:
        return value
    return int(number) if number.is_integer() and "." not in value and "e" not in value.lower() else number


def read_table(path: Path, required: tuple[str, ...]) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such table (make one with analysis/collect.py)")
    with path.open() as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise ConfigError(
                f"{path}: the table lacks column(s) {', '.join(missing)}; it has {', '.join(reader.fieldnames or [])}"
            )
        rows = [
            {k: v if k in ("variant_id", "run", "variant") else _number(v) for k, v in row.items()} for row in reader
        ]
    if not rows:
        raise ConfigError(f"{path}: the table has no rows")
    return rows


def per_run(rows: list[dict]) -> list[dict]:
    """One row per run (the table has one per run x eval length); a run is a variant and a seed."""
    return list({(row["variant_id"], row["seed"]): row for row in rows}.values())


def _fit_once(X, y, censored):
    """Least squares; with censored rows, the Tobit maximum likelihood started from it."""
    from scipy import optimize
    from scipy.special import log_ndtr

    coef = np.linalg.lstsq(X[~censored], y[~censored], rcond=None)[0]
    if not censored.any():
        return coef
    residual = y[~censored] - X[~censored] @ coef
    start = np.append(coef, np.log(max(residual.std(), 1e-2)))

    def nll(
        theta,
    ):  # normal log density of the measured, log survival of the censored runs (numpy, not scipy.stats: 10x faster)
        z = (y - X @ theta[:3]) / np.exp(theta[3])
        return -((-0.5 * z[~censored] ** 2 - theta[3] - 0.5 * np.log(2 * np.pi)).sum() + log_ndtr(-z[censored]).sum())

    return optimize.minimize(
        nll, start, method="Nelder-Mead", options={"maxiter": 4000, "xatol": 1e-6, "fatol": 1e-9}
    ).x[:3]


MAX_BOOTSTRAP = 100_000


def fit_power_law(
    parameters, lengths, targets, censored=None, groups=None, bootstrap: int = 1000, seed: int = 0, level: float = 0.95
):
    """log E = log a + alpha log N + beta log L + noise (normal in log E).

    Without censored runs, least squares. A censored run (every evaluated length stayed within eps, so
    E is only known to be at least its value) enters the likelihood as P(log E >= value) (a Tobit
    model), never as a measurement. Intervals: percentile bootstrap over configurations, ``groups``
    naming each run's configuration so that its seeds are resampled together (default: each run alone).

    Returns {"coef": [log a, alpha, beta], "ci": [[lo, hi]] x 3, "samples", "configurations", "censored"}."""
    X = np.column_stack([np.ones(len(targets)), np.log(parameters), np.log(lengths)])
    y = np.log(np.asarray(targets, dtype=float))
    censored = np.zeros(len(y), bool) if censored is None else np.asarray(censored, bool)
    groups = np.arange(len(y)) if groups is None else np.asarray(groups)
    if (~censored).sum() < 4 or np.linalg.matrix_rank(X[~censored]) < 3:
        uncensored = X[~censored]
        sizes, trained = len(set(uncensored[:, 1].tolist())), len(set(uncensored[:, 2].tolist()))
        missing = [what for what, n in (("model sizes", sizes), ("training lengths", trained)) if n < 2]
        raise ConfigError(
            f"the fit needs >= 4 uncensored runs over at least two model sizes and two training lengths; the "
            f"{(~censored).sum()} uncensored of {len(y)} runs have {sizes} model size(s) and {trained} training "
            f"length(s)"
            + (f": add {' and '.join(missing)}" if missing else "")
            + (f" ({int(censored.sum())} censored: evaluate longer lengths)" if censored.any() else "")
        )
    if not 1 <= bootstrap <= MAX_BOOTSTRAP:  # each resample is a fit: 10^8 of them would run for days
        raise ConfigError(f"--bootstrap must be from 1 to {MAX_BOOTSTRAP:,}, got {bootstrap}")
    coef = _fit_once(X, y, censored)
    rng = np.random.default_rng(seed)
    # configurations in the order of their (N, L), not of their labels: the draws do not move with a renaming
    members = sorted((np.flatnonzero(groups == g) for g in np.unique(groups)), key=lambda m: tuple(X[m[0]]))
    draws = []
    for _ in range(bootstrap):
        index = np.concatenate([members[i] for i in rng.integers(0, len(members), len(members))])
        kept = index[~censored[index]]
        if len(kept) >= 4 and np.linalg.matrix_rank(X[kept]) == 3:
            draws.append(_fit_once(X[index], y[index], censored[index]))
    if not draws:
        raise ConfigError(
            f"no bootstrap resample of the {len(members)} configurations could be fitted "
            "(too few model sizes or training lengths)"
        )
    tail = (1 - level) / 2 * 100
    ci = np.percentile(np.array(draws), [tail, 100 - tail], axis=0).T
    return {
        "coef": np.asarray(coef).tolist(),
        "ci": ci.tolist(),
        "samples": len(y),
        "configurations": len(members),
        "censored": int(censored.sum()),
        "level": level,
        "bootstrap": len(draws),
        "bootstrap_asked": bootstrap,  # a resample with too few sizes or lengths to fit is dropped, not redrawn
    }


def load_study(name: str, storage: str):
    """An existing study from a journal file path or an RDB URL."""
    import optuna

    if "://" not in storage:
        if not Path(storage).is_file():
            raise ConfigError(f"--storage {storage}: no such journal file")
        from clex.journal import journal_storage

        storage = journal_storage(storage)
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        raise ConfigError(f"--study {name!r}: no such study in the storage") from None


def finite(values) -> bool:
    return all(v is not None and math.isfinite(v) and v > 0 for v in values)
