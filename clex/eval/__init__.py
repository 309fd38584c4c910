"""Evaluation of a patched model: perplexity protocols (perplexity), key tokens, passkey, RULER-style tasks,
lm-eval harness tasks, cached decoding, and the protocol words tables use (protocol)."""
