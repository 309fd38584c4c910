"""RULER-style evaluation: the grid of task x length x depth answered by greedy decoding through the KV cache
(twice the reference answer's tokens + 8; ``decoding.greedy_answer``), its summary and heat map, and the checks
of ``eval.ruler``. The tasks and how a prompt is built are in ``ruler_tasks.py``.
"""

import random

from clex.errors import ConfigError
from clex.eval.ruler_tasks import DEPTH_TASKS, KEYS, TASKS, Haystack, Skipped, make_sample, matches


def ruler_grid(
    model, tokenizer, documents, lengths, opts, seed: int, chunk_size: int | None = None, samples=None
) -> list[dict]:
    """One row per (task, length, depth): exact-match accuracy and RULER's score over ``opts.trials``
    samples; depth is null for the tasks that spread over the context. A cell that cannot be built
    at a length has null accuracy and says why in ``skipped``. ``samples``: a list that receives every
    sample's task, length, depth, expected strings, answer and whether it was right."""
    from clex.eval.decoding import greedy_answer

    model.eval()
    haystack = Haystack(tokenizer, documents, 4 * max(lengths))
    rows = []
    for task in opts.tasks:
        for length in lengths:
            for depth in list(opts.depths) if task in DEPTH_TASKS else [None]:
                correct, score, skipped = 0, 0.0, None
                for trial in range(opts.trials):
                    rng = random.Random(f"{seed}/{task}/{length}/{depth}/{trial}")
                    try:
                        sample = make_sample(task, haystack, length, depth, rng, opts)
                    except Skipped as reason:
                        skipped = str(reason)
                        break
                    generated = greedy_answer(model, sample.prompt, sample.answer_tokens, chunk_size)
                    answer = tokenizer.decode(generated.tolist())
                    hits = matches(answer, sample.expected)
                    correct += all(hits)
                    if samples is not None:
                        samples.append(
                            {
                                "task": task,
                                "length": length,
                                "prompt_tokens": len(sample.prompt),
                                "depth": depth,
                                "trial": trial,
                                "expected": list(sample.expected),
                                "answer": answer,
                                "right": all(hits),
                            }
                        )
                    score += sum(hits) / len(hits)
                rows.append(
                    {
                        "task": task,
                        "length": length,
                        "depth": depth,
                        "trials": opts.trials,
                        "accuracy": None if skipped else correct / opts.trials,
                        "score": None if skipped else score / opts.trials,
                        "skipped": skipped,
                    }
                )
    return rows


def summarise(rows: list[dict]) -> dict:
    """Mean accuracy per task and length (over depths), and per length over the tasks that ran."""
    by_task = {}
    for row in rows:
        if row["accuracy"] is not None:
            by_task.setdefault(row["task"], {}).setdefault(row["length"], []).append(row["accuracy"])
    by_task = {task: {n: sum(v) / len(v) for n, v in cells.items()} for task, cells in by_task.items()}
    lengths = sorted({n for cells in by_task.values() for n in cells})
    by_length = {
        n: sum(c[n] for c in by_task.values() if n in c) / sum(n in c for c in by_task.values()) for n in lengths
    }
    return {"accuracy_by_task": by_task, "accuracy_by_length": by_length}


def plot_ruler(rows: list[dict], path, title: str):
    """Task x length: accuracy averaged over depths (grey: a cell that could not be built)."""
    from clex.plots import accuracy_map

    by_task = summarise(rows)["accuracy_by_task"]
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    lengths = sorted({r["length"] for r in rows})
    grid = [[by_task.get(task, {}).get(n, float("nan")) for n in lengths] for task in tasks]
    accuracy_map(grid, lengths, tasks, "prompt length (tokens)", "task (mean over depths)", title, path)


def check_lengths(key: str, lengths):
    """A task grid's lengths: null (the perplexity lengths) or a non-empty list of positive token counts."""
    if lengths is not None and (
        not isinstance(lengths, (list, tuple))
        or not lengths
        or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in lengths)
    ):
        raise ConfigError(f"{key} must be null (the perplexity lengths) or a list of token counts, got {lengths!r}")


def check_depths(key: str, depths):
    if (
        not isinstance(depths, (list, tuple))
        or not depths
        or not all(isinstance(d, (int, float)) and not isinstance(d, bool) and 0 <= d <= 1 for d in depths)
    ):
        raise ConfigError(f"{key} must be a non-empty list of depths in [0, 1] (0 = start, 1 = end), got {depths!r}")


def check_options(opts: dict):
    """``eval.ruler``: one line naming the key and what it allows."""
    tasks = opts.get("tasks")
    if not isinstance(tasks, (list, tuple)) or not tasks:
        raise ConfigError(f"eval.ruler.tasks must be a non-empty list of tasks ({', '.join(TASKS)}), got {tasks!r}")
    for task in tasks:
        if task not in TASKS:
            raise ConfigError(f"eval.ruler.tasks: unknown task {task!r}; choices: {', '.join(TASKS)}")
    if len(set(tasks)) < len(tasks):
        raise ConfigError(f"eval.ruler.tasks names a task twice: {list(tasks)}")
    check_depths("eval.ruler.depths", opts.get("depths"))
    check_lengths("eval.ruler.lengths", opts.get("lengths"))
    for key, low in (
        ("trials", 1),
        ("needles", 2),
        ("queries", 2),
        ("hops", 1),
        ("common", 1),
        ("common_frequency", 2),
        ("digits", 3),
    ):
        value = opts.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ConfigError(f"eval.ruler.{key} must be an integer >= {low}, got {value!r}")
    if max(opts["needles"], opts["queries"]) > len(KEYS):
        raise ConfigError(f"eval.ruler.needles and eval.ruler.queries must be at most {len(KEYS)} (the distinct keys)")
