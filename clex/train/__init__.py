"""Training: one experiment from config to results.json (experiment), its two stages (stages), the
LightningModule (module), callbacks, the distributed strategies, the run folder."""
