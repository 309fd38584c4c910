"""The rope a checkpoint starts from (no torch): which scaled ropes a strategy scales on from, and the
context L0 each already covers."""

STARTING_ROPES = ("linear", "llama3", "yarn", "longrope")  # checkpoint rope types a strategy scales on from


def original_length(rope: dict, max_position: int | None) -> int | None:
    """L0 of a checkpoint: for plain RoPE its pre-training length; for a scaled rope it starts from, the
    context that rope covers already: max_position_embeddings, or for yarn and linear factor x the original
    length where that is longer (Qwen's YaRN configs keep max_position_embeddings at the original 32768 with
    factor 4; transformers' yarn takes the original to be max_position_embeddings when none is given). Llama 3
    and LongRoPE checkpoints state their context in max_position_embeddings (Llama 3.2: factor 32 x 8192 would
    overshoot its 131072)."""
    kind = rope.get("rope_type", rope.get("type", "default"))
    if kind not in STARTING_ROPES:
        return rope.get("original_max_position_embeddings") or max_position
    original = rope.get("original_max_position_embeddings") or (max_position if kind == "yarn" else None)
    scaled = int(round(float(rope.get("factor") or 1.0) * original)) if original and kind in ("yarn", "linear") else 0
    return max(max_position or 0, scaled) or None
