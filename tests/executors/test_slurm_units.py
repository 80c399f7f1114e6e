"""Slurm executor pieces that need no cluster: array chunking, profiles, jobs.jsonl, state parsing."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest

from harness.errors import HarnessError
from harness.executors.slurm import (
    RequeueableTask,
    _parse_states,
    append_jobs_log,
    array_chunks,
    describe,
    read_jobs_log,
)
from harness.executors.slurm_profile import PROFILES_DIR, SlurmProfile, load_profile, parse_profile
from harness.run.extract import ExtractTask
from harness.types import ShardTask


@pytest.mark.parametrize("cap", [2, 3, 10, 1001])
def test_chunks_cover_every_task_once_and_stay_under_the_array_cap(cap):
    sizes = sorted({0, 1, 2, cap - 2, cap - 1, cap, cap + 1, 2 * cap - 3, 2 * cap - 2, 2 * cap - 1, 2 * cap,
                    3 * cap + 5})
    for n in sizes:
        chunks = array_chunks(n, cap)
        flat = [i for c in chunks for i in c]
        assert flat == list(range(n)), (n, cap)  # every task exactly once, in order
        for c in chunks:
            # each chunk is its own array indexed 0..len-1, so its largest index is len - 1 < cap - 1
            assert 1 <= len(c) <= cap - 1, (n, cap, c)
        assert len(chunks) == -(-n // (cap - 1))  # no more sbatch calls than needed


def test_chunking_refuses_a_cap_that_admits_no_array():
    with pytest.raises(HarnessError, match="MaxArraySize 1"):
        array_chunks(5, 1)


def test_shipped_profiles_load_and_translate_to_submitit(tmp_path, monkeypatch):
    import submitit

    # submitit's SlurmExecutor refuses to exist without an srun on PATH; only the sbatch script text is
    # checked here, so a stand-in is enough (a machine without Slurm must run this test too)
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "srun").write_text("#!/bin/sh\nexit 0\n")
    (fake_bin / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}{os.pathsep}{os.environ.get('PATH', '')}")
    names = sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))
    assert {"ci", "example-gpu"} <= set(names)
    for name in names:
        profile = load_profile(name)
        ex = submitit.SlurmExecutor(folder=tmp_path / name)
        ex.update_parameters(**profile.submitit_parameters())  # submitit validates every key
        script = ex._make_submission_file_text("python -c pass", "uid")
        if profile.partition:
            assert f"#SBATCH --partition={profile.partition}" in script
        assert f"#SBATCH --time={profile.time_min}" in script
        for line in profile.setup:
            assert line in script
    gpu = load_profile("example-gpu")
    text = submitit.SlurmExecutor(folder=tmp_path / "g")
    text.update_parameters(**gpu.submitit_parameters())
    script = text._make_submission_file_text("python -c pass", "uid")
    for line in ("#SBATCH --account=my-lab", "#SBATCH --qos=normal", "#SBATCH --gpus-per-task=1",
                 "#SBATCH --requeue", "#SBATCH --constraint='a100|h100'", "module load cuda/12.1"):
        assert line in script, line


@pytest.mark.parametrize("raw, message", [
    ({"partiton": "gpu"}, "unknown key(s) partiton; valid keys: name, partition"),
    ({"time_min": 0}, "time_min: 0 is not valid; expected an integer >= 1"),
    ({"time_min": "1h"}, "time_min: '1h' is not valid"),
    ({"max_array_size": 1}, "max_array_size: 1 is not valid; expected an integer >= 2"),
    ({"mem_gb": -2}, "mem_gb: -2 is not valid; expected a positive number"),
    ({"setup": "module load cuda"}, "setup: 'module load cuda' is not valid; expected a list of shell lines"),
    ({"extra_sbatch": {"array": "0-5"}}, "extra_sbatch.array"),
    ({"extra_sbatch": ["x"]}, "extra_sbatch: ['x'] is not valid"),
    ({"partition": ""}, "partition: '' is not valid; expected a non-empty string"),
    ({"time_min": 1, "signal_delay_s": 90}, "signal_delay_s: 90 is not valid; expected less than time_min × 60"),
    ({"gpus_per_task": True}, "gpus_per_task: True is not valid"),
    (["partition"], "a profile is a YAML mapping"),
])
def test_bad_profiles_are_refused_with_file_key_and_value(tmp_path, raw, message):
    path = tmp_path / "site.yaml"
    with pytest.raises(HarnessError) as err:
        parse_profile(raw, path)
    assert str(path) in str(err.value) and message in str(err.value)


def test_missing_profile_lists_the_shipped_ones(tmp_path):
    with pytest.raises(HarnessError, match="no such Slurm profile; pass a file or one of: ci, example-gpu"):
        load_profile(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("partition: [unclosed\n")
    with pytest.raises(HarnessError, match="not valid YAML"):
        load_profile(bad)


def test_profile_defaults_name_from_file():
    p = parse_profile({"partition": "a"}, Path("/x/site.yaml"))
    assert p == SlurmProfile(name="site", partition="a", source="/x/site.yaml")


def test_task_descriptors_are_tiny_and_requeueable():
    from harness.run.generate import generate_shard

    task = ShardTask("/runs/r/cells/abc", 4, 8, batch_size=4)
    assert len(pickle.dumps((RequeueableTask(), generate_shard, task))) < 400
    # the default checkpoint resubmits the very same call: the idempotent task resumes from its journal
    delayed = RequeueableTask().checkpoint(generate_shard, task)
    assert delayed.args == (generate_shard, task)
    assert describe(task) == "abc/0000004-0000008"
    extract = ExtractTask("/runs/r/cells/abc", 4, 8, ("x",), "/c")
    assert describe(extract) == "extract/abc/0000004-0000008" and extract.needs == describe(task)


def test_jobs_log_keeps_the_latest_submission_per_item_and_skips_torn_lines(tmp_path):
    append_jobs_log(tmp_path, [{"job_id": "5_0", "item": "a", "stage": "generate"},
                               {"job_id": "5_1", "item": "b", "stage": "generate"}])
    append_jobs_log(tmp_path, [{"job_id": "9", "item": "a", "stage": "generate"},
                               {"job_id": "10", "item": "a", "stage": "collect"}])
    with open(tmp_path / "jobs.jsonl", "a") as f:
        f.write('{"job_id": "11_0", "item": "b", "sta')  # a launcher killed mid-write
    latest = read_jobs_log(tmp_path, "generate")
    assert {k: v["job_id"] for k, v in latest.items()} == {"a": "9", "b": "5_1"}
    assert all(json.loads(line) for line in (tmp_path / "jobs.jsonl").read_text().splitlines()[:4])


def test_state_parsing_reads_sacct_and_squeue_formats():
    sacct = "12_0|COMPLETED\n12_1|CANCELLED by 0\n12.batch|COMPLETED\n13|RUNNING\n"
    assert _parse_states(sacct) == {"12_0": "COMPLETED", "12_1": "CANCELLED", "13": "RUNNING"}
    shim = "JobID|State|NodeList\n14_3|PENDING|\n14_2|RUNNING|vm\n"
    assert _parse_states(shim) == {"14_3": "PENDING", "14_2": "RUNNING"}
    # array tasks that have not started yet are listed as one line
    pending = "15_[4-6,9%2]|PENDING|\n15_1|RUNNING|vm\n16|PENDING|\n"
    assert _parse_states(pending) == {"15_4": "PENDING", "15_5": "PENDING", "15_6": "PENDING",
                                      "15_9": "PENDING", "15_1": "RUNNING", "16": "PENDING"}
