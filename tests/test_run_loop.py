"""The training loop both wings share (rkmeta_rl/run/loop.py): training in memory with no
run directory, and callbacks that see every record and may stop training."""

from __future__ import annotations

import os

import pytest
from supervised_runs import sinusoid

from rkmeta_rl.rl.config import TrainConfig, resolve
from rkmeta_rl.rl.trainer import Trainer, prepare_run_dir, resume_run
from rkmeta_rl.run import rundir
from rkmeta_rl.supervised.trainer import SupervisedTrainer, prepare_supervised_run


def tiny(**overrides) -> TrainConfig:
    values = dict(meta_batch_size=2, fast_batch_size=2, hidden=[8, 8], meta_iters=3)
    return resolve(TrainConfig(**{**values, **overrides}))


def without_timing(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.startswith("seconds")} for r in records]


@pytest.mark.parametrize("wing", ["rl", "supervised"])
def test_training_in_memory_writes_nothing_and_equals_a_run_directory(wing, tmp_path,
                                                                     monkeypatch):
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    if wing == "rl":
        in_memory, on_disk = Trainer(tiny()), prepare_run_dir(tiny(), tmp_path / "run")
    else:
        in_memory = SupervisedTrainer(sinusoid())
        on_disk = prepare_supervised_run(sinusoid(), tmp_path / "run")
    records = in_memory.run(progress=False)
    assert os.listdir(work) == []  # nothing written
    assert in_memory.iteration == in_memory.total and in_memory.writer_lock is None
    on_disk.run(progress=False)
    assert records and without_timing(records) == without_timing(
        rundir.read_metrics(tmp_path / "run"))


def test_a_callback_sees_every_record_and_false_stops_after_it(tmp_path):
    seen = []

    def stop_after_two(record: dict) -> bool:
        seen.append(record["iter"])
        return len(seen) < 2

    trainer = prepare_run_dir(tiny(meta_iters=4), tmp_path / "cut")
    records = trainer.run(progress=False, callbacks=[stop_after_two])
    assert seen == [0, 1] and [r["iter"] for r in records] == [0, 1]
    assert rundir.load_checkpoint(tmp_path / "cut")["iteration"] == 2
    resumed = resume_run(tmp_path / "cut")
    resumed.run(progress=False)
    whole = prepare_run_dir(tiny(meta_iters=4), tmp_path / "whole")
    whole.run(progress=False)
    assert without_timing(rundir.read_metrics(tmp_path / "cut")) == without_timing(
        rundir.read_metrics(tmp_path / "whole"))


def test_supervised_callbacks_see_the_window_records():
    seen = []
    trainer = SupervisedTrainer(sinusoid())
    trainer.run(progress=False, callbacks=[lambda r: seen.append(r["iter"])])
    assert seen == [4, 9, 14, 19]  # log_every 5; a callback returning None goes on
