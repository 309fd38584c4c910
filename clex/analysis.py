"""Tidy tables of runs and the power-law fit of the extrapolation length (for analysis/)."""
import csv
import json
import math
from pathlib import Path

import numpy as np

from clex.experiment import SCHEMA_VERSION
from clex.registry import ConfigError

COLUMNS = ["run", "strategy", "variant", "model", "parameters", "train_length", "original_length", "max_scale", "amplification",
           "projection_width", "seed", "length", "ppl", "nll", "tokens", "extrapolation_length", "censored",
           "corpus", "source"]


def rows_of(results: dict, source: str) -> list[dict]:
    if results.get("schema_version") != SCHEMA_VERSION:
        raise ConfigError(f"{source}: schema_version {results.get('schema_version')!r}, this code reads {SCHEMA_VERSION}")
    strategy_cfg = results["config"]["strategy"]
    common = {"run": results["name"], "strategy": results["strategy"], "model": results["choices"]["model"],
              "parameters": results["parameters"], "train_length": results["train_length"],
              "original_length": results["original_length"], "max_scale": results.get("max_scale"),
              "amplification": strategy_cfg.get("amplification"), "projection_width": strategy_cfg.get("projection_width"),
              "seed": results["seed"], "extrapolation_length": results["extrapolation_length"]["value"],
              "censored": results["extrapolation_length"]["censored"], "corpus": results["corpus"]["sha256"],
              "source": source}
    return [{**common, "length": r["length"], "ppl": r["ppl"], "nll": r["nll"], "tokens": r["tokens"]}
            for r in results["eval"]]


IGNORED_KEYS = ("name", "out_dir", "seed", "choices.")


def _flat(config: dict, prefix="") -> dict:
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def label_variants(results: list[dict]) -> dict:
    """run name -> "strategy key=value ..." naming what sets runs of one strategy apart (seeds are
    not variants: runs differing only in seed share a label and are averaged)."""
    labels, by_strategy = {}, {}
    for r in results:
        by_strategy.setdefault(r["strategy"], []).append(r)
    for strategy, runs in by_strategy.items():
        flats = [{k: v for k, v in _flat(r["config"]).items() if not k.startswith(IGNORED_KEYS)} for r in runs]
        keys = sorted({k for f in flats for k in f})
        # train.length is a column of its own, and so is L0 where it follows it (tiny models' default)
        follows_length = all(f.get("model.original_length") == f.get("train.length") for f in flats)
        skip = {"train.length"} | ({"model.original_length"} if follows_length else set())
        varying = [k for k in keys if len({str(f.get(k)) for f in flats}) > 1 and k not in skip]
        for r, f in zip(runs, flats):
            labels[r["name"]] = " ".join([strategy] + [f"{k.split('.')[-1]}={f.get(k)}" for k in varying])
    return labels


def collect(paths: list[Path]) -> list[dict]:
    found = []
    for root in paths:
        root = Path(root)
        if not root.exists():
            raise ConfigError(f"{root}: no such file or directory")
        files = [root] if root.is_file() else sorted(root.rglob("results.json"))
        for path in files:
            try:
                results = json.loads(path.read_text())
                rows = rows_of(results, str(path))
            except (json.JSONDecodeError, KeyError) as error:
                raise ConfigError(f"{path}: not a clex results.json ({type(error).__name__}: {error})") from None
            found.append((results, rows))
    labels = label_variants([results for results, _ in found])
    return [{**row, "variant": labels[row["run"]]} for _, rows in found for row in rows]


def write_csv(rows: list[dict], path: Path):
    from clex import io

    def write(handle):
        import io as stdio

        text = stdio.StringIO()
        writer = csv.DictWriter(text, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
        handle.write(text.getvalue().encode())

    io.atomic_write(path, write)


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
            raise ConfigError(f"{path}: the table lacks column(s) {', '.join(missing)}; it has {', '.join(reader.fieldnames or [])}")
        rows = [{k: _number(v) for k, v in row.items()} for row in reader]
    if not rows:
        raise ConfigError(f"{path}: the table has no rows")
    return rows


def per_run(rows: list[dict]) -> list[dict]:
    """One row per run (the table has one per run x eval length)."""
    return list({row["run"]: row for row in rows}.values())


def fit_power_law(parameters, lengths, targets, bootstrap: int = 1000, seed: int = 0, level: float = 0.95):
    """log E = log a + alpha log N + beta log L by least squares; percentile bootstrap over runs.

    Returns {"coef": [log a, alpha, beta], "ci": [[lo, hi]] x 3, "samples": n}."""
    X = np.column_stack([np.ones(len(targets)), np.log(parameters), np.log(lengths)])
    y = np.log(targets)
    if len(y) < 4 or np.linalg.matrix_rank(X) < 3:
        raise ConfigError(f"the fit needs >= 4 runs over at least two model sizes and two training lengths, got {len(y)}")
    coef = np.linalg.lstsq(X, y, rcond=None)[0]
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(bootstrap):
        index = rng.integers(0, len(y), len(y))
        if np.linalg.matrix_rank(X[index]) == 3:
            draws.append(np.linalg.lstsq(X[index], y[index], rcond=None)[0])
    tail = (1 - level) / 2 * 100
    ci = np.percentile(np.array(draws), [tail, 100 - tail], axis=0).T
    return {"coef": coef.tolist(), "ci": ci.tolist(), "samples": len(y), "level": level}


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
