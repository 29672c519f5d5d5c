"""The crash injector in CI: real processes, real SIGKILLs, on a bounded budget.

Locally it runs as long as you like: ``python tests/crash/injector.py --runs 1000``.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / "crash"))

import injector


def test_every_named_step_and_200_random_kills_without_a_violation(capsys):
    runs, kills, named_kills, violations, stalls = injector.campaign(
        runs=70, kills=5, named=True, min_random_kills=200
    )
    random_kills = kills - named_kills
    with capsys.disabled():
        print(
            f"\ncrash injector: {runs} runs, {kills} SIGKILLs ({named_kills} at named steps, "
            f"{random_kills} at random instants), {len(violations)} safety violations, "
            f"{len(stalls)} stalled {stalls}; modes rotate: {', '.join(injector.MODES)}"
        )
    assert violations == []  # safety: checked on every run, finished or stalled
    # Liveness: every run finishes (the one known stall is fixed, docs/durability.md).
    assert stalls == []
    named_plans = 2 * len(injector.STEPS) - 1  # both parties; only Alice proposes a close
    assert named_kills == named_plans  # every named step was reached and killed at
    assert random_kills >= 200


def test_a_kill_just_after_the_final_update_is_durable_does_not_stall(tmp_path):
    # The rare stall of issue 3: killed between making the final update durable and
    # reporting it, a party restarted finished but never reported it, so the run waited
    # for a report that could not come. Deterministic here, for both parties.
    for party in ("alice", "bob"):
        out = injector.run_once(
            tmp_path / party, crash_party=party, crash_step="after_final_persist", timeout=30
        )
        assert out.kills == 1 and out.violations == []
        assert out.stalled is None, out.stalled
