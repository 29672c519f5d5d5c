"""Crash injector: two channel parties as separate OS processes, killed with SIGKILL.

Each run opens a payments channel on an embedded L1 held by the injector, starts Alice
(the sequencer) and Bob as processes talking TCP on loopback with durable stores, and
kills them — at a named protocol step (``party.STEPS``) or at random instants — then
restarts them from their data directories until both hold the final update. It then checks:

- I1: no party emitted two different signatures at one sequence number, judged from the
  bytes each process wrote before putting them on the socket;
- I3: every command either party reported done is in the final log, exactly where
  reported; each party's commands were executed exactly as many times as it meant to;
- conservation: both logs verify end to end and every outcome pays exactly the locked total;
- L1: a cooperative close with the final update pays exactly its outcome.

Run long locally: ``python tests/crash/injector.py --runs 500 --kills 5``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bfs_smr.adapters.memory import MemoryL1

from bfs_smr import ChannelParams, Ed25519, Signer, encode, verify_log
from bfs_smr._messages import Accept, Commit, Entries, Signed, parse_message
from bfs_smr.runtime import load_app
from bfs_smr.runtime.store import Store

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE))
from party import STEPS  # noqa: E402 - the party's own list: one place names the steps


@dataclass
class Outcome:
    kills: int = 0
    violations: list[str] = field(default_factory=list)
    stalled: str | None = None  # liveness: the run did not finish in time (and why)


def _frames(path: Path) -> list[bytes]:
    data = path.read_bytes() if path.exists() else b""
    out, i = [], 0
    while i + 4 <= len(data):
        size = int.from_bytes(data[i : i + 4], "big")
        if i + 4 + size > len(data):
            break  # a frame cut by the kill while being logged: it never reached the socket
        out.append(data[i + 4 : i + 4 + size])
        i += 4 + size
    return out


#: How the sequencer issues, per run (campaigns rotate through them): pipelined, one
#: command per update; batched automatically under load; batched by the caller.
MODES: dict[str, dict[str, int]] = {
    "pipelined": {"batch": 1, "max_batch": 1},
    "auto-batched": {"batch": 1, "max_batch": 8},
    "batched": {"batch": 5, "max_batch": 1},
}


def run_once(
    workdir: Path,
    *,
    crash_party: str | None = None,
    crash_step: str | None = None,
    crash_count: int = 1,
    random_kills: int = 0,
    seed: int = 0,
    commands: tuple[int, int] = (400, 100),
    timeout: float = 60.0,
    mode: str = "pipelined",
) -> Outcome:
    rng = random.Random(seed)
    result = Outcome()
    chain = MemoryL1()
    seeds = {"alice": os.urandom(32), "bob": os.urandom(32)}
    signers = {name: Signer(Ed25519(), s) for name, s in seeds.items()}
    deposit = commands[0] + 10
    params = ChannelParams(
        l1=chain.format.domain,
        participants=(signers["alice"].public_key, signers["bob"].public_key),
        deposits=(deposit, 0),
        app="payments",
        app_version=1,
        nonce=seed,
    )
    chain.mint(params.participants[0], deposit)
    alice_l1 = chain.adapter(params.participants[0])
    alice_l1.open(params)
    mine = {"alice": commands[0], "bob": commands[1]}

    def configure(name: str, *, crash: bool) -> None:
        peer = "bob" if name == "alice" else "alice"
        cfg: dict[str, object] = {
            "role": name,
            "seed": seeds[name].hex(),
            "params": encode(params.to_value()).hex(),
            "commands": mine[name],
            "peer_commands": mine[peer],
            "timeout": timeout,
            **MODES[mode],
        }
        if crash and crash_party == name:
            cfg["crash_step"] = crash_step
            cfg["crash_count"] = crash_count
        (workdir / name / "config.json").write_text(json.dumps(cfg))

    for name in ("alice", "bob"):
        (workdir / name).mkdir(parents=True)
        configure(name, crash=True)

    procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(name: str) -> None:
        with open(workdir / name / "stderr.log", "ab") as err:
            procs[name] = subprocess.Popen(
                [sys.executable, str(HERE / "party.py"), str(workdir / name)],
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )

    for name in ("alice", "bob"):
        start(name)
    deadline = time.monotonic() + timeout
    next_kill = time.monotonic() + rng.uniform(0.2, 0.4)
    kills_left = random_kills
    try:
        while time.monotonic() < deadline:
            if all(_finished(workdir / n) for n in procs):
                break
            for name, proc in procs.items():
                if proc.poll() is not None:
                    if proc.returncode == -signal.SIGKILL:
                        result.kills += 1
                    else:
                        err = (workdir / name / "stderr.log").read_text()[-500:]
                        result.violations.append(f"{name} exited with {proc.returncode}: {err}")
                        return result
                    configure(name, crash=False)  # a restarted party runs to the end
                    start(name)
            if kills_left and time.monotonic() >= next_kill:
                victim = rng.choice(["alice", "bob"])
                if procs[victim].poll() is None:
                    procs[victim].send_signal(signal.SIGKILL)
                    procs[victim].wait()
                    kills_left -= 1
                next_kill = time.monotonic() + rng.uniform(0.15, 0.35)
            time.sleep(0.01)
        else:
            result.stalled = f"seed {seed}: no final update within {timeout:.0f} s"
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait()
    if result.violations:
        return result
    # Safety is checked on whatever the parties reached, finished or not.
    _check(workdir, params, chain, mine, result, complete=result.stalled is None, mode=mode)
    return result


def _finished(directory: Path) -> bool:
    done = directory / "done.log"
    return done.exists() and any(line.startswith("final") for line in done.read_text().splitlines())


def _check(
    workdir: Path,
    params: ChannelParams,
    chain: MemoryL1,
    mine: dict[str, int],
    result: Outcome,
    *,
    complete: bool,
    mode: str = "pipelined",
) -> None:
    app = load_app("payments")
    fmt = chain.format
    logs = {}
    for name in ("alice", "bob"):
        with Store(workdir / name / "store") as store:
            key_seq = store.log_size(params.channel_id) - 1
            logs[name] = store.log_range(params.channel_id, 0, key_seq) if key_seq >= 0 else []
        try:
            if logs[name]:
                verify_log(params, app, fmt, logs[name])
        except Exception as exc:  # noqa: BLE001 - any failure is a violation to report
            result.violations.append(f"{name}'s log does not verify: {exc}")
            return
        done = workdir / name / "done.log"
        for line in done.read_text().splitlines() if done.exists() else []:
            if line.startswith(("violation", "error")):
                result.violations.append(f"{name}: {line}")
    short, long = sorted(logs.values(), key=len)
    if long[: len(short)] != short:
        result.violations.append("the two logs fork")
        return
    log = long
    if complete and (logs["alice"] != logs["bob"] or not log[-1].update.final):
        result.violations.append("the run finished without the same final update at both")
        return
    # I1: one signature per (party, seq) among all bytes that may have left.
    signed: dict[tuple[int, int], set[bytes]] = {}
    for index, name in enumerate(("alice", "bob")):
        for data in _frames(workdir / name / "sent.log"):
            msg = parse_message(data)
            # A proposal is unsigned (it carries a tag): the follower signs first.
            if isinstance(msg, Accept | Commit):
                signed.setdefault((index, msg.seq), set()).add(msg.signature)
            elif isinstance(msg, Signed):
                signed.setdefault((index, msg.update.seq), set()).add(msg.signature)
            elif isinstance(msg, Entries):
                for entry in msg.entries:
                    sig = entry.signatures[index]
                    if sig is not None:
                        signed.setdefault((index, entry.seq), set()).add(sig)
    for (index, seq), sigs in signed.items():
        if len(sigs) > 1:
            result.violations.append(
                f"party {index} signed {len(sigs)} different updates at seq {seq}"
            )
    # I3: everything reported done is in the log, where it was reported.
    where = {(e.actor, e.ref): s.seq for s in log for e in s.update.commands}
    for name in ("alice", "bob"):
        done = workdir / name / "done.log"
        for line in done.read_text().splitlines() if done.exists() else []:
            if line.startswith("done "):
                _, seq, actor, ref = line.split()
                if where.get((int(actor), int(ref))) != int(seq):
                    result.violations.append(f"{name} reported {line!r}, which is not in the log")
    if not complete:
        return
    final = log[-1]
    counts = [sum(1 for s in log for e in s.update.commands if e.actor == i) for i in (0, 1)]
    if counts != [mine["alice"], mine["bob"]]:
        result.violations.append(f"commands executed {counts}, meant {mine['alice'], mine['bob']}")
    # The mode really ran: batched runs put several commands in an update, others one.
    widest = max(len(s.update.commands) for s in log)
    batching = MODES[mode]["batch"] > 1 or MODES[mode]["max_batch"] > 1
    if batching != (widest > 1):
        result.violations.append(f"{mode} run, but the widest update holds {widest} commands")
    # L1 pays exactly the final outcome, which conserves the locked value.
    payouts = chain.adapter(params.participants[1]).cooperative_close(final)
    if payouts != final.update.outcome or sum(payouts) != params.locked:
        result.violations.append(f"L1 paid {payouts}, the final update says {final.update.outcome}")


def campaign(
    runs: int, kills: int, named: bool, base_seed: int = 0, min_random_kills: int = 0
) -> tuple[int, int, int, list[str], list[str]]:
    """Every named step for both parties (if ``named``) plus ``runs`` random-kill runs,
    and more random runs (up to twice ``runs``) until ``min_random_kills`` have landed."""
    plans: list[dict[str, object]] = []
    if named:
        for party in ("alice", "bob"):
            for step in STEPS:
                if step == "close" and party == "bob":
                    continue  # only Alice (the sequencer) proposes the close
                count = 1 if step in ("close", "after_final_persist") else 4
                plans.append({"crash_party": party, "crash_step": step, "crash_count": count})
    plans += [{"random_kills": kills} for _ in range(runs)]
    modes = list(MODES)
    for n, plan in enumerate(plans):
        plan["mode"] = modes[n % len(modes)]
    total_kills, named_kills, violations, stalls = 0, 0, [], []
    i = 0
    while i < len(plans):
        plan = plans[i]
        with tempfile.TemporaryDirectory(prefix="bfs-crash-") as tmp:
            out = run_once(Path(tmp), seed=base_seed + i, **plan)  # type: ignore[arg-type]
            keep = os.environ.get("BFS_CRASH_KEEP")  # where to keep a stalled run's files
            if out.stalled and keep:
                shutil.copytree(tmp, Path(keep) / f"stall-{base_seed + i}")
        total_kills += out.kills
        if "crash_step" in plan:
            named_kills += out.kills
            if out.kills == 0:
                violations.append(f"{plan}: the named step was never reached")
        violations += [f"{plan}: {v}" for v in out.violations]
        if out.stalled:
            stalls.append(f"{plan}: {out.stalled}")
        i += 1
        short = total_kills - named_kills < min_random_kills
        if i == len(plans) and short and len(plans) < 2 * runs + 12:
            plans.append({"random_kills": kills, "mode": modes[len(plans) % len(modes)]})
    return len(plans), total_kills, named_kills, violations, stalls


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40, help="random-kill runs")
    parser.add_argument("--kills", type=int, default=5, help="random kills per run")
    parser.add_argument("--no-named", action="store_true", help="skip the named-step runs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    start = time.monotonic()
    runs, kills, named_kills, violations, stalls = campaign(
        args.runs, args.kills, not args.no_named, args.seed
    )
    for v in violations:
        print("VIOLATION", v)
    for s in stalls:
        print("STALL", s)
    print(
        f"crash injector: {runs} runs, {kills} SIGKILLs ({named_kills} at named steps, "
        f"{kills - named_kills} at random instants), {len(violations)} safety violations, "
        f"{len(stalls)} stalled, "
        f"{time.monotonic() - start:.0f} s"
    )
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
