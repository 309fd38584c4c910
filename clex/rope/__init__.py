"""The rope maths: scaling strategies (t -> inv_freq, attention factor), the samplers of t and positions, the
rotary patch that puts a strategy into a transformers model, and its angle backward."""
