"""The reusable analysis of finished runs, behind ``rkmeta-rl`` subcommands: methods
against a baseline paired on seeds and tasks (``compare``), held-out return at every
snapshot (``snapshots``), the figures (``plot FIGURE``, one module each in
``rkmeta_rl/analysis/plots/``). It may import the wings; the wings do not import it."""
