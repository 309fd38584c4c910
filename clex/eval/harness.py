"""lm-evaluation-harness tasks (``lm-eval``: the real RULER, LongBench, any harness task) on a patched model.

The model instance and a transformers tokenizer go to ``lm_eval.simple_evaluate`` through the harness's
Hugging Face class (``HFLM``), so the run's patched model is what is evaluated, never a reload. t follows
each request: a scoring request (loglikelihood) is one forward, whose t the patched rotary module takes
from its length (position_ids.max() + 1); a generation holds t at the prompt's length for the prompt and
every generated token (``PatchedHFLM._model_generate``), as the keys in the cache were rotated with it.
With batch_size > 1 a batch shares one t: that of its longest request.

Tasks whose metrics are named by a length (RULER's ``niah_*``, ``ruler_*``) run once per length, with
RULER's ``max_seq_lengths`` metadata set to it; other tasks run once (length null). Offline first: the
hub and datasets run offline, and a task needing a download is refused before training (``harness_tasks.py``).
"""

import functools
import tempfile
from pathlib import Path

from clex.eval.harness_tasks import leaf_tasks, offline, sized_by_length, task_config, task_manager


@functools.cache
def patched_lm_class():
    """HFLM whose generation holds t at the prompt's length (the class needs lm_eval, an optional extra)."""
    from lm_eval.models.huggingface import HFLM

    from clex.rope.patch import is_patched, rotary_module

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
