"""Launching many runs: the reproduction scripts' commands as Ray tasks on a local
instance or a cluster (:mod:`~rkmeta_rl.launch.grid`), in phases with progress and
reports (:mod:`~rkmeta_rl.launch.jobs`), each a process group that ends with its task
(:mod:`~rkmeta_rl.launch.job_process`). Only ``scripts/`` uses it."""
