"""How perplexity was scored: the protocol entry results.json records, and its words in tables (no torch)."""


def protocol(eval_cfg) -> dict:
    """How perplexity was scored, for results.json and every table header."""
    chunk, stride = eval_cfg.get("chunk_size"), eval_cfg.get("stride")
    entry = {
        "name": "sliding_window" if stride else "kv_chunked" if chunk else "full",
        "window": "the evaluation length",
        "chunk_size": chunk,
    }
    if stride:
        entry["stride"] = stride
    if eval_cfg.get("documents") == "longest":
        entry["documents"] = "longest"
    if eval_cfg.get("same_tokens"):
        entry["same_tokens"] = True
    return entry


def describe_protocol(entry: dict | None) -> str:
    """How perplexity was scored (results.json ``eval_protocol``), in words, for table headers. Runs
    written before the protocol was recorded scored full sequences."""
    entry = entry or {"name": "full"}
    same = "; every length on the documents long enough for the longest" if entry.get("documents") == "longest" else ""
    if entry.get("same_tokens"):
        same = (
            "; the same tokens at every length (the longest length's windows, each cut into pieces of the "
            "shorter length)"
        )
    if entry["name"] == "full":
        return "full sequences (non-overlapping, every token scored, one forward each)" + same
    if entry["name"] == "kv_chunked":
        return f"non-overlapping sequences scored in chunks of {entry['chunk_size']} tokens through the KV cache" + same
    return (
        f"sliding window (window = the evaluation length, stride {entry['stride']}: only the tokens past the "
        "overlap scored)" + same
    )


def protocol_label(entry: dict | None) -> str:
    """The protocol in a CSV cell: full, kv_chunked(C) or sliding_window(S), + same-documents."""
    entry = entry or {"name": "full"}
    label = (
        "full"
        if entry["name"] == "full"
        else f"{entry['name']}({entry['chunk_size'] if entry['name'] == 'kv_chunked' else entry['stride']})"
    )
    return (
        label
        + (" same-documents" if entry.get("documents") == "longest" else "")
        + (" same-tokens" if entry.get("same_tokens") else "")
    )


def protocols_line(labels) -> str:
    """One header line for the protocols of a table's runs (more than one is said, not hidden)."""
    found = sorted(set(labels))
    return (
        "Perplexity protocol: "
        + "; ".join(found)
        + (" (differs between runs: compare within one protocol)" if len(found) > 1 else "")
        + "."
    )
