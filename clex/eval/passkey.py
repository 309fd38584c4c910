"""Passkey retrieval (Mohtashami & Jaggi 2023; the CLEX paper's protocol): a 5-digit key hidden at a
given depth of filler text, then asked for; accuracy over a length x depth grid, greedy decoding."""

import torch

from clex.eval.decoding import greedy_answer

INTRO = (
    "There is an important info hidden inside a lot of irrelevant text. Find it and memorize them. "
    "I will quiz you about the important information there. "
)
FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
QUESTION = "What is the pass key? The pass key is"


def passkey_prompt(tokenizer, length: int, depth: float, passkey: int):
    """(prompt token ids of exactly ``length`` tokens, answer token ids): the key sentence sits at
    ``depth`` (0 = right after the intro, 1 = right before the question) of the filler."""
    key = tokenizer.encode(f"The pass key is {passkey}. Remember it. {passkey} is the pass key. ")
    intro = list(tokenizer.prefix) + list(tokenizer.encode(INTRO))  # a checkpoint's BOS first
    question = tokenizer.encode(QUESTION)
    room = length - len(intro) - len(key) - len(question)
    if room < 0:
        raise ValueError(f"passkey length {length} is shorter than the prompt's fixed parts ({length - room} tokens)")
    unit = tokenizer.encode(FILLER)
    filler = list(unit) * (room // len(unit) + 1)
    filler = filler[:room]
    cut = int(round(depth * room))
    ids = intro + filler[:cut] + list(key) + filler[cut:] + list(question)
    return torch.tensor(ids, dtype=torch.long), torch.tensor(tokenizer.encode(f" {passkey}"), dtype=torch.long)


def passkey_grid(
    model, tokenizer, lengths, depths, trials: int, seed: int, chunk_size: int | None = None, samples=None
) -> list[dict]:
    """One row per (length, depth): accuracy over ``trials`` random keys (the same keys for every model).
    ``samples``: a list that receives every prompt's length, depth, key, answer and whether it was right."""
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for length in lengths:
        for depth in depths:
            correct = 0
            for _ in range(trials):
                passkey = int(torch.randint(10000, 100000, (), generator=generator))
                prompt, answer = passkey_prompt(tokenizer, length, depth, passkey)
                generated = greedy_answer(model, prompt, len(answer), chunk_size)
                right = bool(torch.equal(generated, answer))
                correct += right
                if samples is not None:
                    samples.append(
                        {
                            "length": length,
                            "prompt_tokens": len(prompt),
                            "depth": depth,
                            "expected": str(passkey),
                            "answer": tokenizer.decode(generated.tolist()),
                            "right": right,
                        }
                    )
            rows.append({"length": length, "depth": depth, "trials": trials, "accuracy": correct / trials})
    return rows


def plot_passkey(rows: list[dict], path, title: str):
    from clex.plots import accuracy_map

    lengths = sorted({r["length"] for r in rows})
    depths = sorted({r["depth"] for r in rows})
    grid = [
        [next(r["accuracy"] for r in rows if r["length"] == n and r["depth"] == d) for n in lengths] for d in depths
    ]
    accuracy_map(grid, lengths, [f"{d:.0%}" for d in depths], "prompt length (tokens)", "depth of the key", title, path)
