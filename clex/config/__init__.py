"""The config: composition from the shipped groups and --config-dir folders (compose, files, values), its checks
(compose.validate, cost), and a run's identity (identity). No torch at import."""
