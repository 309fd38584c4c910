"""Corpus sources, one file each, registered in ``DATASETS``: a function of the ``data`` config section
yielding ``(key, text)`` documents, or ``(key, text, split)`` where the source names a document's split;
``key`` (a relative path) decides the split otherwise."""

from clex.registry import Registry

DATASETS = Registry("dataset", "clex.data.sources")
