"""Analysis of finished runs (no torch): statistics (stats), the one results reader (collection), tidy tables
and scaling-law fits (tables), comparison.md (comparison); figures are
clex/plots.py."""
