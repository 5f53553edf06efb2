"""Running a training job, whichever wing: the loop (:mod:`rkmeta_rl.run.loop`) with its
run directory, lock, checkpoints, metrics, signals, snapshots, progress and TensorBoard."""
