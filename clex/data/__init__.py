"""The data of a run, one module per job:

- ``sources/``: corpus sources, one file each (``data=stdlib``, ``text``, ``hf``), registered in ``DATASETS``;
- ``corpus``: the documents in train / validation / test splits;
- ``tokenizers``, ``bpe``: bytes, a checkpoint's own tokenizer, or a BPE trained on the train split;
- ``windows``: token streams, seeded random windows, the resumable sampler, evaluation sequences;
- ``module``: the LightningDataModule that owns all of it for a run.
"""
