"""lm-evaluation-harness tasks (``lm-eval``: the real RULER, LongBench, any harness task) on a patched model.

The model instance and a transformers tokenizer go to ``lm_eval.simple_evaluate`` through the harness's
Hugging Face class (``HFLM``), so the run's patched model is what is evaluated, never a reload. t follows
each request: a scoring request (loglikelihood) is one forward, whose t the patched rotary module takes
from its length (position_ids.max() + 1); a generation holds t at the prompt's length for the prompt and
every generated token (``PatchedHFLM._model_generate``), as the keys in the cache were rotated with it.
With batch_size > 1 a batch shares one t: that of its longest request.

Tasks whose metrics are named by a length (RULER's ``niah_*``, ``ruler_*``) run once per length, with
RULER's ``max_seq_lengths`` metadata set to it; other tasks run once (length null). Offline first: the
hub and datasets run offline, and a task needing a download is refused before training.
"""

import contextlib
import copy
import functools
import os
import tempfile
from pathlib import Path

from clex.registry import ConfigError
from clex.ruler import check_lengths

INSTALL = 'eval=harness needs lm-evaluation-harness: pip install -e ".[harness]"'
OFFLINE = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
ESSAYS = "the Hugging Face dataset baber/paul_graham_essays"
# tasks whose data lm-eval 0.4.13 fetches in Python (not a dataset_path we can look up in the cache)
DOWNLOADS = {
    **{
        task: ESSAYS
        for task in ("niah_single_2", "niah_single_3", "niah_multikey_1", "niah_multivalue", "niah_multiquery")
    },
    "ruler_qa_squad": "SQuAD 2.0's dev set (a URL, not the Hugging Face cache)",
    "ruler_qa_hotpot": "HotpotQA's dev set (a URL, not the Hugging Face cache)",
}
# lm-eval 0.4.13's ruler_vt: a ~500-token in-context example, then a sample loop that never ends when the rest
# does not fit (seen at 1024 tokens with a 2048-token BPE)
MIN_LENGTH = {"ruler_vt": 2048}
LIST_TASKS = "`lm-eval ls tasks` lists them (add --include_path DIR for eval.harness.include_path)"
PACKAGED = ("json", "csv", "parquet", "text", "arrow")  # dataset_path builders that read local files


def require_lm_eval():
    """``import lm_eval``, or the one line that says how to install it."""
    try:
        import lm_eval  # noqa: F401
        from lm_eval.models.huggingface import HFLM  # noqa: F401 (needs accelerate: lm-eval's hf extra)
    except ImportError:
        raise ConfigError(INSTALL) from None


@contextlib.contextmanager
def offline(allowed: bool = False):
    """The hub and datasets offline (env and the flags huggingface_hub and datasets read at import), unless
    ``allowed`` (eval.harness.allow_download)."""
    if allowed:
        yield
        return
    import datasets.config
    import huggingface_hub.constants as hub

    saved = {k: os.environ.get(k) for k in OFFLINE}
    flags = [(hub, "HF_HUB_OFFLINE"), (datasets.config, "HF_HUB_OFFLINE"), (datasets.config, "HF_DATASETS_OFFLINE")]
    old = [getattr(owner, name) for owner, name in flags]
    os.environ.update(dict.fromkeys(OFFLINE, "1"))
    for owner, name in flags:
        setattr(owner, name, True)
    try:
        yield
    finally:
        for (owner, name), value in zip(flags, old, strict=False):
            setattr(owner, name, value)
        for key, value in saved.items():
            os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)


def task_manager(include_path=None, metadata=None):
    """lm-eval's task index; ``metadata`` (RULER's tokenizer and max_seq_lengths) reaches the tasks only
    through the manager that builds them, not through simple_evaluate's argument once a manager is given.
    Indexing the task folders takes ~10 s, so it is done once per process and include path; a manager with
    other metadata is a copy of it with its own task factory (lm-eval 0.4.13 keeps the metadata there)."""
    from lm_eval.tasks._factory import TaskFactory

    manager = copy.copy(_indexed(tuple(include_path) if isinstance(include_path, list) else include_path))
    manager.metadata, manager._factory = metadata, TaskFactory(meta=metadata)
    return manager


@functools.cache
def _indexed(include_path):
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=list(include_path) if isinstance(include_path, tuple) else include_path)


def leaf_tasks(manager, name: str) -> list:
    """A task's index entry, or a group's or tag's leaf tasks."""
    from lm_eval.tasks._index import Kind

    entry = manager.task_index[name]
    if entry.kind == Kind.TAG:
        return [e for e in manager.task_index.values() if name in e.tags and e.kind in (Kind.TASK, Kind.PY_TASK)]
    if entry.kind == Kind.GROUP:
        children = [c if isinstance(c, str) else c.get("task") for c in (entry.cfg or {}).get("task", [])]
        return [leaf for child in children if child in manager.task_index for leaf in leaf_tasks(manager, child)]
    return [entry]


def task_config(entry) -> dict:
    """The task's YAML with its includes, functions unresolved (nothing imported or built)."""
    from lm_eval.tasks._yaml_loader import load_yaml

    return load_yaml(entry.yaml_path, resolve_func=False) if entry.yaml_path else dict(entry.cfg or {})


def sized_by_length(config: dict) -> bool:
    """RULER-style: every metric is named by a sequence length ("4096")."""
    names = [str(m.get("metric")) for m in config.get("metric_list") or []]
    return bool(names) and all(n.isdigit() for n in names)


def missing_download(config: dict) -> str | None:
    """What the task needs downloaded and the local cache lacks (None: it runs offline)."""
    name = config.get("task")
    if name in DOWNLOADS:
        return None if DOWNLOADS[name] == ESSAYS and cached("baber/paul_graham_essays") else DOWNLOADS[name]
    path = config.get("dataset_path")
    if not path or path in PACKAGED or config.get("custom_dataset"):
        return None
    return None if cached(path, config.get("dataset_name")) else f"the Hugging Face dataset {path}"


def cached(path: str, name: str | None = None) -> bool:
    """Whether datasets finds ``path`` (config ``name``) without the network."""
    import datasets

    with offline():
        try:
            datasets.load_dataset_builder(path, name or None)
        except Exception:  # noqa: BLE001 (offline, datasets raises ConnectionError, FileNotFoundError or ValueError)
            return False
    return True


def check_tasks(opts: dict, lengths: list[int]):
    """Before training: each task exists and runs offline at every length; one line per refusal."""
    require_lm_eval()
    manager = task_manager(opts.get("include_path"))
    for task in opts["tasks"]:
        if task not in manager.task_index:
            raise ConfigError(f"eval.harness.tasks: unknown task {task!r}; {LIST_TASKS}")
        for entry in leaf_tasks(manager, task):
            config = task_config(entry)
            if not opts.get("allow_download") and (need := missing_download(config)):
                raise ConfigError(
                    f"eval.harness.tasks: {entry.name} needs {need}, which is not in the local cache and we run "
                    "offline: "
                    "run the task once where the network is reachable and copy ~/.cache/huggingface (or HF_HOME) "
                    "here, or set eval.harness.allow_download=true"
                )
            low = MIN_LENGTH.get(entry.name)
            if low and sized_by_length(config) and min(lengths) < low:
                raise ConfigError(
                    f"eval.harness.lengths: {entry.name} needs lengths >= {low} in lm-eval 0.4.13 "
                    f"(shorter ones never finish building), got {min(lengths)}"
                )


def check_options(opts: dict):
    """``eval.harness`` keys: one line naming the key and what it allows (the tasks are checked in check_tasks)."""
    tasks = opts.get("tasks")
    if not isinstance(tasks, (list, tuple)) or not tasks or not all(isinstance(t, str) for t in tasks):
        raise ConfigError(
            f"eval.harness.tasks must be a non-empty list of lm-eval task names ({LIST_TASKS}), got {tasks!r}"
        )
    check_lengths("eval.harness.lengths", opts.get("lengths"))
    limit = opts.get("limit")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, float)) or limit <= 0):
        raise ConfigError(
            f"eval.harness.limit must be null (every sample), a count >= 1 or a fraction in (0, 1), got {limit!r}"
        )
    for key in ("batch_size", "max_length"):
        value = opts.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ConfigError(
                f"eval.harness.{key} must be an integer >= 1{' or null' if key == 'max_length' else ''}, got {value!r}"
            )
    if not isinstance(opts.get("options") or {}, dict):
        raise ConfigError(
            f"eval.harness.options must be a mapping of simple_evaluate arguments, got {opts['options']!r}"
        )
    if not isinstance(opts.get("allow_download", False), bool):
        raise ConfigError(f"eval.harness.allow_download must be true or false, got {opts['allow_download']!r}")


@functools.cache
def patched_lm_class():
    """HFLM whose generation holds t at the prompt's length (the class needs lm_eval, an optional extra)."""
    from lm_eval.models.huggingface import HFLM

    from clex.rotary import is_patched, rotary_module

    class PatchedHFLM(HFLM):
        def _model_generate(self, context, max_length, stop, **generation_kwargs):
            """t of the (longest, left-padded) prompt for the prompt and every generated token."""
            if not is_patched(self.model):
                return super()._model_generate(context, max_length, stop, **generation_kwargs)
            with rotary_module(self.model).evaluation_length(context.shape[1]):
                return super()._model_generate(context, max_length, stop, **generation_kwargs)

    return PatchedHFLM


def hf_tokenizer(tokenizer):
    """A transformers tokenizer with the run's ids: a BPE or pretrained run's own, or one built for bytes."""
    inner = getattr(tokenizer, "tokenizer", None)
    if inner is not None:
        return inner
    if getattr(tokenizer, "name", None) == "bytes":
        return byte_tokenizer()
    return tokenizer  # already a transformers tokenizer (clex-harness on a checkpoint)


def byte_tokenizer():
    """clex.data.ByteTokenizer as a transformers tokenizer: byte b -> id b, 256 the separator (its EOS)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(ByteLevel.alphabet(), key=lambda c: BYTE_OF[c])
    backend = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(["<|sep|>"])
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|sep|>")


def _bytes_to_unicode() -> dict:
    """GPT-2's byte -> printable character map, inverted: character -> byte."""
    printable = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    chars, extra = printable[:], 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=False)}


BYTE_OF = _bytes_to_unicode()


def metric_of(results: dict, length: int | None) -> tuple[str, float, float | None]:
    """The score a row reports: RULER's metric named by the length, else the task's first metric."""
    if length is not None:
        key = f"{length},none"
    else:
        key = next(k for k in results if k.endswith(",none") and "_stderr" not in k)
    stderr = results.get(key.replace(",", "_stderr,", 1))
    return key.split(",")[0], float(results[key]), stderr if isinstance(stderr, (int, float)) else None


def run_tasks(model, tokenizer, opts: dict, lengths: list[int]) -> tuple[list[dict], dict]:
    """One simple_evaluate per task (per length for RULER-style tasks): rows (task, length, metric, score) and
    the harness's own results and sample counts per call. A cell RULER cannot build at a length (its
    ValueError) has a null score and says why in ``skipped``."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks.ruler import common_utils

    tokenizer = hf_tokenizer(tokenizer)
    max_length = opts.get("max_length") or max(lengths) + 256  # room for RULER's answers; nothing truncated
    lm = patched_lm_class()(
        pretrained=model, tokenizer=tokenizer, max_length=max_length, batch_size=opts.get("batch_size") or 1
    )
    rows, raw = [], {}
    with offline(opts.get("allow_download", False)), tempfile.TemporaryDirectory() as folder:
        tokenizer.save_pretrained(folder)  # RULER sizes its prompts with a tokenizer it loads by name
        common_utils.get_tokenizer.cache_clear()  # a cached one may belong to another run's folder of this name
        manager = task_manager(opts.get("include_path"))
        for task in opts["tasks"]:
            sized = any(sized_by_length(task_config(e)) for e in leaf_tasks(manager, task))
            for length in lengths if sized else [None]:
                metadata = {"tokenizer": folder, **({"max_seq_lengths": [length]} if sized else {})}
                row = {"task": task, "length": length, "metric": None, "score": None, "stderr": None, "skipped": None}
                try:
                    out = simple_evaluate(
                        model=lm,
                        tasks=[task],
                        limit=opts.get("limit"),
                        log_samples=False,
                        task_manager=task_manager(opts.get("include_path"), metadata),
                        **(opts.get("options") or {}),
                    )
                except ValueError as reason:
                    row["skipped"] = " ".join(str(reason).split())[:300]
                    rows.append(row)
                    continue
                row["metric"], row["score"], row["stderr"] = metric_of(out["results"][task], length)
                raw[f"{task}@{length}" if sized else task] = {
                    "results": out["results"],
                    "n-samples": out["n-samples"],
                    "versions": out["versions"],
                }
                rows.append(row)
    return rows, raw


def summarise(rows: list[dict]) -> dict:
    """Score per task and length ("all" for a task without lengths), and per length over the tasks that ran."""
    by_task = {}
    for row in rows:
        if row["score"] is not None:
            by_task.setdefault(row["task"], {})[str(row["length"]) if row["length"] else "all"] = row["score"]
    lengths = sorted({n for cells in by_task.values() for n in cells if n != "all"}, key=int)
    by_length = {
        n: sum(c[n] for c in by_task.values() if n in c) / sum(n in c for c in by_task.values()) for n in lengths
    }
    return {"score_by_task": by_task, "score_by_length": by_length}


def plot_harness(rows: list[dict], path, title: str):
    """Task x length heat map of the scores (a task without lengths fills its row; grey: not built)."""
    from clex.plots import accuracy_map

    lengths = sorted({r["length"] for r in rows if r["length"] is not None}) or [None]
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    score = {(r["task"], r["length"]): r["score"] for r in rows}
    grid = [
        [v if (v := score.get((t, n), score.get((t, None)))) is not None else float("nan") for n in lengths]
        for t in tasks
    ]
    accuracy_map(grid, [n or "all" for n in lengths], tasks, "prompt length (tokens)", "lm-eval task", title, path)


def write_harness(model, tokenizer, opts: dict, lengths: list[int], folder: Path, label: str) -> dict:
    """harness.json (rows, summary and the harness's own output) and harness.png in ``folder``; the summary."""
    from importlib import metadata

    from clex import io

    rows, raw = run_tasks(model, tokenizer, opts, lengths)
    summary = summarise(rows)
    protocol = {k: v for k, v in opts.items() if k not in ("tasks", "lengths")}
    io.write_json(
        Path(folder) / "harness.json",
        {
            "strategy": label,
            "tasks": list(opts["tasks"]),
            "lengths": lengths,
            "protocol": {
                **protocol,
                "lm_eval": metadata.version("lm_eval"),
                "t": "scoring: the input's length; generation: the prompt's length, held",
            },
            "rows": rows,
            **summary,
            "harness": raw,
        },
    )
    plot_harness(rows, Path(folder) / "harness.png", f"lm-eval tasks: {label}")
    return summary


def check(opts: dict, lengths: list[int]):
    """``eval.harness`` before training: its keys, then its tasks at ``eval.harness.lengths`` (else ``lengths``)."""
    check_options(opts)
    check_tasks(opts, list(opts.get("lengths") or lengths))
