"""Tidy tables of runs and the power-law fit of the extrapolation length (for analysis/)."""

import csv
import json
import math
import sys
from pathlib import Path

import numpy as np

from clex.io import SCHEMA_VERSION
from clex.registry import ConfigError
from clex.stats import label_variants, mean_ci, protocol_label, variant_id

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


def warn(message: str):
    print(f"warning: {message}", file=sys.stderr)


def rows_of(results: dict, source: str) -> list[dict]:
    if not isinstance(results, dict):
        raise ConfigError(f"{source}: not a clex results.json (a JSON {type(results).__name__}, not an object)")
    if results.get("schema_version") != SCHEMA_VERSION:
        raise ConfigError(
            f"{source}: schema_version {results.get('schema_version')!r}, this code reads {SCHEMA_VERSION}"
        )
    strategy_cfg = results["config"]["strategy"]
    common = {
        "run": results["name"],
        "strategy": results["strategy"],
        "variant_id": variant_id(results["config"]),
        "model": results["choices"]["model"],
        "parameters": results["parameters"],
        "train_length": results["train_length"],
        "original_length": results["original_length"],
        "max_scale": results.get("max_scale"),
        "amplification": strategy_cfg.get("amplification"),
        "projection_width": strategy_cfg.get("projection_width"),
        "seed": results["seed"],
        "extrapolation_length": results["extrapolation_length"]["value"],
        "censored": results["extrapolation_length"]["censored"],
        "protocol": protocol_label(results.get("eval_protocol")),
        "corpus": results["corpus"]["sha256"],
        "source": source,
    }
    rows = []
    for r in results["eval"]:
        if r["ppl"] is not None and not isinstance(r["ppl"], (int, float)):
            raise ConfigError(f"{source}: ppl at length {r['length']} is not a number: {r['ppl']!r}")
        rows.append({**common, "length": r["length"], "ppl": r["ppl"], "nll": r["nll"], "tokens": r["tokens"]})
    return rows


def read_results(path: Path) -> dict:
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a clex results.json (not UTF-8 text)") from None
    except json.JSONDecodeError as error:
        raise ConfigError(f"{path}: not a clex results.json (JSONDecodeError: {error})") from None


def collect(paths: list[Path]) -> list[dict]:
    """One row per run x evaluation length. The same run found twice (two paths to it, or a copy)
    counts once: runs are identified by variant and seed."""
    found, seen = [], {}
    for root in paths:
        root = Path(root)
        if not root.exists():
            raise ConfigError(f"{root}: no such file or directory")
        for path in [root] if root.is_file() else sorted(root.rglob("results.json")):
            results = read_results(path)
            try:
                rows = rows_of(results, str(path))
            except (KeyError, TypeError) as error:
                raise ConfigError(f"{path}: not a clex results.json ({type(error).__name__}: {error})") from None
            identity = (rows[0]["variant_id"], rows[0]["seed"]) if rows else (str(path), None)
            if identity in seen:
                warn(
                    f"{path} is run {results['name']} (variant {identity[0]}, seed {identity[1]}) again, "
                    f"already read from {seen[identity]}; counted once"
                )
                continue
            seen[identity] = path
            found.append((results, rows))
    everything = [results for results, _ in found]
    follows = all(r["original_length"] == r["train_length"] for r in everything)  # L0 = L: one column says both
    labels = label_variants(
        everything, columns=("train.length", "model.original_length") if follows else ("train.length",)
    )
    return [{**row, "variant": labels[row["variant_id"]]} for _, rows in found for row in rows]


def aggregate(rows: list[dict]) -> list[dict]:
    """Per variant and evaluation length: n seeds, mean PPL and its 95% t-interval. A run whose PPL is
    missing or not finite is left out, with a warning naming it (it would poison the mean)."""
    groups = {}
    for r in rows:
        key = (r["variant_id"], r["length"])
        group = groups.setdefault(
            key,
            {
                "variant": r["variant"],
                "variant_id": r["variant_id"],
                "strategy": r["strategy"],
                "train_length": r["train_length"],
                "length": r["length"],
                "protocol": r.get("protocol", "full"),
                "values": {},
            },
        )
        if r["ppl"] is None or not math.isfinite(r["ppl"]):
            warn(f"run {r['run']} has PPL {r['ppl']} at length {r['length']}; left out of {r['variant']}")
            continue
        group["values"][r["seed"]] = r["ppl"]
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


def write_csv(rows: list[dict], path: Path, columns=COLUMNS):
    import io as stdio

    from clex import io

    text = stdio.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    io.write_text(path, text.getvalue())


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
        raise ConfigError(
            f"the fit needs >= 4 uncensored runs over at least two model sizes and two training "
            f"lengths, got {(~censored).sum()} of {len(y)} (censored runs: evaluate longer lengths)"
        )
    if bootstrap < 1:
        raise ConfigError(f"--bootstrap must be >= 1, got {bootstrap}")
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
    }


def load_study(name: str, storage: str):
    """An existing study from a journal file path or an RDB URL."""
    import optuna

    if "://" not in storage:
        if not Path(storage).is_file():
            raise ConfigError(f"--storage {storage}: no such journal file")
        storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(storage))
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        raise ConfigError(f"--study {name!r}: no such study in the storage") from None


def finite(values) -> bool:
    return all(v is not None and math.isfinite(v) and v > 0 for v in values)
