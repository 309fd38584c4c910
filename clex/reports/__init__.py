"""The miniature report's pages (docs/miniature/): Table 1 (table1), the ablations and claims (miniature,
miniature_scaling), CLEX as its authors trained it (official)."""
