"""The one results reader of ``collect`` and ``compare`` (no torch here): finds the results.json files under
run folders, reads and checks every value of each before anything is written, and sets the malformed aside
with the reason (or refuses them, ``strict``). Then the tidy rows: one per run x evaluation length, and one
per run x lm-eval task x length."""

import json
import math
import os
from pathlib import Path

from clex import io
from clex.analysis.stats import label_variants
from clex.config.identity import current_layout, variant_id
from clex.errors import ConfigError, warn
from clex.eval.protocol import protocol_label
from clex.io import SCHEMA_VERSION

CACHES = (".base", ".tokenizers")  # folders of cached base models and tokenizers, never runs to collect
LIMIT = 1e150  # a value past it is absurd, and its square overflows the statistics
STRUCTURE = [  # what collect and compare read, and its kind ("a.b": key b of object a)
    *((key, str) for key in ("name", "strategy", "choices.model", "corpus.sha256")),
    *((key, dict) for key in ("config", "config.strategy", "extrapolation_length")),
    ("eval", list),
    ("extrapolation_length.censored", bool),
]
KINDS = {str: "a string", dict: "an object", list: "a list", bool: "true or false"}


def read_results(path: Path) -> dict:
    """A results.json as read, its config in today's layout (one written before the attention section too)."""
    try:
        results = json.loads(io.read_limited(path, "results.json").decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a clex results.json (not UTF-8 text)") from None
    except json.JSONDecodeError as error:
        raise ConfigError(f"{path}: not a clex results.json (JSONDecodeError: {error})") from None
    except RecursionError:
        raise ConfigError(f"{path}: not a clex results.json (nested too deeply to read)") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot be read ({error.strerror})") from None
    if isinstance(results, dict) and isinstance(results.get("config"), dict):
        results["config"] = current_layout(results["config"])
    return results


def _number(value, what: str, low: float = -LIMIT, integer: bool = False, finite: bool = True):
    """``value`` if it is a number (an int where ``integer``) in [low, LIMIT); non-finite only where not ``finite``."""
    kinds = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise ValueError(f"{what} is {value!r}, not {'an integer' if integer else 'a number'}")
    if not math.isfinite(value):
        if finite:
            raise ValueError(f"{what} is {value}, not a finite number")
        return value
    if not low <= value < LIMIT:
        raise ValueError(f"{what} is {value:g}, outside [{low:g}, {LIMIT:g})")
    return value


def _scores(table, what: str, nested: bool = False):
    """A map of finite numbers (a task's score per length); ``nested``: a map of such maps (results.json's tasks)."""
    if not isinstance(table, dict):
        raise ValueError(f"{what} is {type(table).__name__}, not an object")
    for key, value in table.items():
        if nested:
            _scores(value, f"{what}[{key!r}]")
        else:
            _number(value, f"{what}[{key!r}]")


def check_values(results: dict):
    """Every value collect and compare read, with its type and range; ValueError names the first bad one."""
    for what, kind in STRUCTURE:
        value = results
        for key in what.split("."):
            value = value[key]
        if isinstance(value, bool) is not (kind is bool) or not isinstance(value, kind):
            raise ValueError(f"{what} is {json.dumps(value, default=str)[:60]}, not {KINDS[kind]}")
    _number(results["seed"], "seed", integer=True)
    _number(results["parameters"], "parameters", 0, integer=True)
    _number(results["train_length"], "train_length", 1, integer=True)
    _number(results["original_length"], "original_length", 1, integer=True)
    if results.get("max_scale") is not None:
        _number(results["max_scale"], "max_scale")
    if not results["eval"]:
        raise ValueError("eval has no rows")
    for row in results["eval"]:
        length = _number(row["length"], "an eval length", 1, integer=True)
        _number(row["tokens"], f"tokens at length {length}", 0, integer=True)
        ppl, nll = row["ppl"], row["nll"]
        if nll is not None:
            _number(nll, f"nll at length {length}", finite=False)
        if ppl is None:
            continue
        _number(ppl, f"ppl at length {length}", 1, finite=False)  # exp(NLL >= 0); inf/NaN: a diverged run
        if (
            math.isfinite(ppl)
            and nll is not None
            and math.isfinite(nll)
            and abs(math.log(ppl) - nll) > 1e-4 * max(1, abs(nll))
        ):
            raise ValueError(f"ppl at length {length} is {ppl:g}, not exp(nll {nll:g}) = {math.exp(nll):g}")
    if results["extrapolation_length"]["value"] is not None:
        _number(results["extrapolation_length"]["value"], "extrapolation_length.value", 0)
    _scores(results.get("tasks", {}), "tasks", nested=True)


def check_results(results, source) -> dict:
    """``results`` if it is a clex results.json whose every value collect and compare read is sound, else a
    ConfigError naming ``source`` and the problem."""
    if not isinstance(results, dict):
        raise ConfigError(f"{source}: not a clex results.json (a JSON {type(results).__name__}, not an object)")
    if results.get("schema_version") != SCHEMA_VERSION:
        raise ConfigError(
            f"{source}: schema_version {results.get('schema_version')!r}, this code reads {SCHEMA_VERSION}"
        )
    try:
        check_values(results)
    except KeyError as error:
        raise ConfigError(f"{source}: not a clex results.json (no key {error})") from None
    except (TypeError, AttributeError) as error:  # a list or number where an object should be
        raise ConfigError(f"{source}: not a clex results.json ({type(error).__name__}: {error})") from None
    except ValueError as error:
        raise ConfigError(f"{source}: {error}") from None
    return results


def find_results(paths) -> list[Path]:
    """The results.json files: each file given, and those under each folder (searched recursively) outside
    the base-model and tokenizer caches."""
    found = []
    for root in map(Path, paths):
        if not root.exists():
            raise ConfigError(f"{root}: no such file or directory")
        if root.is_file():
            found.append(root)
            continue
        under = [p for p in sorted(root.rglob("results.json")) if not set(p.relative_to(root).parts) & set(CACHES)]
        if not under:
            warn(f"no results.json under {root}")
        found += under
    if not found:
        raise ConfigError(f"no results.json under {', '.join(map(str, paths))}")
    return found


def read_runs(paths, strict: bool = False) -> list[tuple[Path, dict]]:
    """(path, results) of every sound run found under ``paths``, a run found twice counted once (a run is its
    variant and seed). A malformed one is skipped with a warning naming it and the problem, or, ``strict``,
    refused; none sound: refused, in one line."""
    runs, seen, skipped = [], {}, []
    for path in find_results(paths):
        try:
            results = check_results(read_results(path), path)
        except ConfigError as error:
            if strict:
                raise ConfigError(f"{error} (--strict refuses a malformed run)") from None
            skipped.append(str(error))
            continue
        identity = (variant_id(results["config"]), results["seed"])
        if identity in seen and Path(seen[identity]).resolve() == Path(path).resolve():
            continue  # one file reached twice (a folder and a study's run_dirs, one path absolute): no news
        if identity in seen:
            warn(
                f"{path} is run {results['name']} (variant {identity[0]}, seed {identity[1]}) again, "
                f"already read from {seen[identity]}; counted once"
            )
            continue
        seen[identity] = path
        runs.append((path, results))
    if not runs:
        more = f"; and {len(skipped) - 3} more" if len(skipped) > 3 else ""
        raise ConfigError(f"no sound results.json among {len(skipped)}: " + "; ".join(skipped[:3]) + more)
    for problem in skipped:
        warn(f"{problem}; skipped")
    return runs


def tokenizer_of(results: dict) -> str:
    """The run's tokenizer in words ("byte", "bpe 2048 <its cache folder>", "pretrained 49152 SmolLM2"); from
    ``data.tokenizer`` for runs that did not describe theirs."""
    described = results.get("tokenizer")
    if isinstance(described, dict) and described.get("kind") == "byte":
        return "byte"  # one byte vocabulary
    if isinstance(described, dict) and described.get("kind"):
        path = described.get("path")
        where = "" if not path else f" {Path(path).parent.name if described['kind'] == 'bpe' else Path(path).name}"
        return f"{described['kind']} {described.get('vocab_size')}{where}"
    data = results.get("config", {}).get("data") or {}
    kind = data.get("tokenizer", "unknown")
    return f"{kind} {data.get('vocab_size')}" if kind == "bpe" else str(kind)


def tokenizers_warning(results: list[dict]) -> str | None:
    """A warning when the runs use more than one tokenizer (their PPL are then not comparable)."""
    runs = {}
    for r in results:
        runs.setdefault(tokenizer_of(r), []).append(r["name"])
    if len(runs) < 2:
        return None
    named = "; ".join(
        f"{tokenizer}: {', '.join(names[:3])}{' ...' if len(names) > 3 else ''}" for tokenizer, names in runs.items()
    )
    return f"the runs use {len(runs)} tokenizers ({named}); PPL of different tokenizers are not comparable"


def rows_of(results: dict, source: str) -> list[dict]:
    """One row per evaluation length of a checked run."""
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
        "tokenizer": tokenizer_of(results),
        "source": source,
    }
    return [
        {**common, "length": r["length"], "ppl": r["ppl"], "nll": r["nll"], "tokens": r["tokens"]}
        for r in results["eval"]
    ]


def task_rows_of(results: dict, path: Path) -> list[dict]:
    """One row per evaluation task x length of a run (results.json's tasks; length "all": a score without one)."""
    common = {k: results[k] for k in ("strategy", "seed", "train_length")}
    common |= {"run": results["name"], "variant_id": variant_id(results["config"]), "source": str(path)}
    metrics = results.get("task_metrics") or {}
    return [
        {**common, "task": task, "length": int(n) if n != "all" else n, "score": score, "metric": metrics.get(task)}
        for task, cells in results.get("tasks", {}).items()
        for n, score in cells.items()
    ]


def tables(runs: list[tuple[Path, dict]]) -> tuple[list[dict], list[dict]]:
    """The tidy rows of checked runs: per evaluation length, and per evaluation task and length, each labelled
    with its variant."""
    everything = [results for _, results in runs]
    follows = all(r["original_length"] == r["train_length"] for r in everything)  # L0 = L: one column says both
    labels = label_variants(
        everything, columns=("train.length", "model.original_length") if follows else ("train.length",)
    )
    ppl = [row for path, results in runs for row in rows_of(results, str(path))]
    tasks = [row for path, results in runs for row in task_rows_of(results, path)]
    return [{**row, "variant": labels[row["variant_id"]]} for row in ppl], [
        {**row, "variant": labels[row["variant_id"]]} for row in tasks
    ]


def collect(paths, strict: bool = False) -> list[dict]:
    """One row per run x evaluation length of the sound runs under ``paths`` (see read_runs)."""
    return tables(read_runs(paths, strict))[0]


def write_together(texts: dict):
    """Each path's text staged beside it (written atomically), then all renamed into place: an error before
    the renames (a full disk, an unwritable folder) leaves every target as it was."""
    staged = []
    try:
        for path, text in texts.items():
            path = Path(path)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.staged")
            staged.append((tmp, path))
            io.atomic_write(
                tmp, lambda handle, text=text: handle.write(text if isinstance(text, bytes) else text.encode())
            )
        for tmp, path in staged:
            os.replace(tmp, path)
    finally:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
