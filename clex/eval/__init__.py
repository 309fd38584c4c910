"""Evaluation of a patched model: perplexity protocols (perplexity), key tokens, the evaluation tasks behind a
registry (tasks: passkey, RULER-style, lm-eval harness), cached decoding, and the protocol words tables use
(protocol)."""
