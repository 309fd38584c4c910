"""How much an evaluation forward may hold (no torch): the sequences per forward and, for a length too long for one
whole forward, the KV chunk, chosen from the model's shape, the length and the memory there is; and the slice of
tokens whose logits are materialised at a time.

Per token, an evaluation forward keeps about two layers' activations alive (12 h + 5 i values each; the heads x
length attention scores too under eager attention) and, scored in slices, no logits beyond LOGIT_SLICE_BYTES. A
KV-chunked forward also holds the cache, 2 x layers x length x kv_width values.
"""

GiB = 2**30
CPU_BUDGET = 1 * GiB  # activations on a CPU: a larger batch buys no speed there, only memory
GPU_FRACTION = 0.5  # of the memory free on the GPU when evaluation starts
LOGIT_SLICE_BYTES = 256 * 2**20  # float32 logits and their log-softmax copies of one slice
MAX_TOKENS = 65536  # per forward, whatever the budget
MIN_CHUNK = 256


def token_bytes(shape: dict, length: int, eager: bool = False, act_bytes: int = 4) -> float:
    """Activation bytes per token of an evaluation forward of ``length``-token sequences."""
    scores = 3 * shape["heads"] * length if eager else 0
    return 2 * (12 * shape["hidden"] + 5 * shape["intermediate"] + scores) * act_bytes


def kv_bytes(shape: dict, act_bytes: int = 4) -> float:
    """Bytes of the KV cache per token (every layer's keys and values)."""
    kv_width = shape["hidden"] * shape.get("kv_heads", shape["heads"]) // shape["heads"]
    return 2 * shape["layers"] * kv_width * act_bytes


def logit_slice(vocab: int) -> int:
    """Tokens whose logits are materialised at a time."""
    return max(1, LOGIT_SLICE_BYTES // (12 * vocab))


def plan(shape: dict, length: int, budget: float, eager: bool = False, act_bytes: int = 4) -> tuple[int, int | None]:
    """(sequences per forward, KV chunk or None) for scoring ``length``-token sequences within ``budget`` bytes."""
    per_token = token_bytes(shape, length, eager, act_bytes)
    sequences = int(min(budget, MAX_TOKENS * per_token) // (per_token * length))
    if sequences >= 1:
        return sequences, None
    room = budget - kv_bytes(shape, act_bytes) * length  # the cache of the whole sequence stays
    per_query = token_bytes(shape, length, eager, act_bytes)  # a chunk's activations against the cache
    chunk = MIN_CHUNK
    while chunk * 2 < length and per_query * chunk * 2 <= room:
        chunk *= 2
    return 1, chunk


def chunked_bytes(shape: dict, length: int, chunk: int, eager: bool = False, act_bytes: int = 4) -> float:
    """Peak activation bytes of scoring one ``length``-token sequence in KV chunks of ``chunk``: the cache, and one
    chunk's activations (with eager attention, its scores against every cached key)."""
    return kv_bytes(shape, act_bytes) * length + token_bytes(shape, length, eager, act_bytes) * chunk
