"""Fuzzing in CI (issue 11): a short coverage-guided run of every untrusted-input surface,
plus Hypothesis over the same targets. ``python -m tests.fuzz --seconds 600`` runs long."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bfs_smr import CodecError
from bfs_smr._messages import parse_message
from bfs_smr.runtime.node._nodemsg import parse_node_message
from tests.fuzz.seeds import seeds
from tests.fuzz.targets import TARGETS, WorkTooLarge, run_one
from tests.hostile import shared_reference_bomb

SECONDS = 6  # per target in CI


@pytest.mark.parametrize("name", list(TARGETS))
@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=2048))
def test_random_bytes_are_accepted_or_refused_in_linear_work(name, data):
    run_one(TARGETS[name], data)


@pytest.mark.parametrize("name", list(TARGETS))
def test_every_seed_is_genuine_and_cheap(name):
    for data in seeds(name):
        run_one(TARGETS[name], data)
    if name == "message":
        kinds = {type(parse_message(data)).__name__ for data in seeds(name)}
        assert {"Propose", "Accept", "Request", "CloseRequest", "Hello"} <= kinds, kinds
    if name == "node_frame":
        assert len({type(parse_node_message(d)) for d in seeds(name)}) == 3


def test_the_work_bound_catches_a_shared_reference_walk():
    # What froze a node (issue 11, defect 1): cbor2 builds a DAG from ~400 bytes, and a
    # tree walk over it costs 2**levels calls. The harness must call that a finding.
    bomb = shared_reference_bomb(30)

    def walk(value):
        if type(value) is list:
            for item in value:
                walk(item)

    def old_decoder(data: bytes) -> None:
        walk(cbor2.loads(data)[:18])  # 2**18 paths: quick to show, far over the bound

    with pytest.raises(WorkTooLarge):
        run_one(old_decoder, bomb)
    with pytest.raises(CodecError):
        from bfs_smr import decode

        decode(bomb)
    run_one(TARGETS["codec"], bomb)


@pytest.mark.skipif(importlib.util.find_spec("atheris") is None, reason="atheris not installed")
def test_coverage_guided_fuzzing_finds_nothing():
    done = subprocess.run(
        [sys.executable, "-m", "tests.fuzz", "--seconds", str(SECONDS), "--json"],
        capture_output=True,
        text=True,
        timeout=60 + 60 * len(TARGETS),  # (instrumented imports are slow on a busy machine)
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    results = json.loads(done.stdout.splitlines()[-1])["targets"]
    assert [r["target"] for r in results] == list(TARGETS)
    for r in results:
        assert r["engine"] == "atheris" and r["execs"] > 100, r
