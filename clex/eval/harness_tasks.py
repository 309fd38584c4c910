"""The task side of ``eval=harness``, checked before training: lm-eval installed, each task known to its index
(built once per process), runnable offline (a dataset in the local cache, or downloads allowed) and at the
lengths asked, and the ``eval.harness`` keys. ``harness.py`` runs the tasks on the model.
"""

import contextlib
import copy
import functools
import os

from clex.errors import ConfigError
from clex.eval.ruler import check_lengths

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


def check(opts: dict, lengths: list[int]):
    """``eval.harness`` before training: its keys, then its tasks at ``eval.harness.lengths`` (else ``lengths``)."""
    check_options(opts)
    check_tasks(opts, list(opts.get("lengths") or lengths))
