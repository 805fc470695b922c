"""Every combination right or refused: the matrix of ``tests/combinations.py``.

Every case of the matrix is classified when its config loads: refused with one line that
names two settings, or accepted.  Accepted cases run in two worker processes (2 forced
CPU devices each, one case at a time, each under a timeout so that a hang fails); by
default the workers run an all-pairs covering of the accepted cases (every pair of
values of two axes — algorithm, exchange, schedule, fault, cost model, batched or 2
devices, fine-tuned before evaluation or not — that occurs in an accepted case occurs in
a run, an algorithm meeting the exchange settings through its class of declared needs;
the algorithm variants that differ only in their relation weights, ``FULL_ONLY``, are
left to the full run), and with ``P2P_FMTL_MATRIX=full`` every accepted case in both
modes (hours on 2 cores).
"""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import combinations as M  # noqa: E402

FULL = os.environ.get("P2P_FMTL_MATRIX") == "full"
CASE_TIMEOUT_S = 240  # one case (its first compiles included); a hang fails after this
WORKERS = 2
SETTING = re.compile(r"\b(?:run|topology|data|model|algorithm|faults|compression|cost)\.\w+")


def _jobs(accepted):
    """``(case, mode, changes)``: which cases run, in which mode, and whether the case is
    also run without its fault / compression / gossip period (check (d)).  By default
    (d) is checked once per setting value and exchange; in the full matrix always."""
    modes = ("batched", "devices")
    tune = {a: M.finetunes(a) for a in {c[0] for c in accepted}}
    if FULL:  # every accepted case, alone, batched and on 2 devices (fine-tuned if it can be)
        return [(c, "batched+devices" + M.FINETUNE * tune[c[0]], True) for c in accepted]
    ci = [c for c in accepted if c[0] not in M.FULL_ONLY]
    # every pair of values of two axes, except that an algorithm meets every exchange
    # setting through its class (what the exchange sees of it: its declared Needs); it
    # still meets every schedule, fault, cost model and mode itself.  One more axis:
    # fine-tuning before evaluation or not (only "" for algorithms that do not take it)
    cls = {a: M.exchange_class(a) for a in {c[0] for c in ci}}
    tuned = {a: ("", M.FINETUNE) if tune[a] else ("",) for a in cls}
    # and features stored in 16 bits (data.storage) for every algorithm that reads data
    # and the settings of the other suffixes (16-bit storage, DP-SGD, attackers with and
    # without a robust rule), wherever the case's config accepts them
    extras = (M.STORAGE16, M.PRIVATE, M.ATTACKED, M.ROBUST)
    rows = [c + (m, cls[c[0]], t) for c in ci for m in modes for t in tuned[c[0]]]
    # (whether a suffix loads does not depend on the cost model: checked once per case
    # with the cost model off)
    loads = {}
    for c in ci:
        for x in extras:
            off = (*c[:4], "off")
            if (off, x) not in loads:
                loads[(off, x)] = M.accepts(off, x)
    ok = [(c, x) for c in ci for x in extras if loads[((*c[:4], "off"), x)]]
    rows += [c + (m, cls[c[0]], x) for c, x in ok for m in modes]
    algorithm, exchange, klass = 0, 1, len(M.AXES) + 1
    chosen = M.covering(rows, skip={(algorithm, exchange), (algorithm, klass)})
    chosen = [(c[: len(M.AXES)], c[len(M.AXES)] + c[-1]) for c in chosen]
    seen, jobs = set(), []
    for case, mode in chosen:
        keys = {(case[1], M.exchange_of(case)), (case[3], M.exchange_of(case))}
        new = keys - seen
        seen |= keys
        jobs.append((case, mode, bool(new)))
    return jobs


def _run_workers(jobs) -> dict[tuple, dict]:
    """Run ``jobs`` in worker processes; a case that takes longer than the timeout is
    recorded as a failure and its worker is restarted on the remaining cases."""
    env = dict(os.environ)
    flags = env.get("XLA_FLAGS", "") + M.FAST_COMPILE
    env["XLA_FLAGS"] = flags + " --xla_force_host_platform_device_count=2"
    env["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "1"  # tiny programs, run a few rounds each
    queues = [jobs[i::WORKERS] for i in range(WORKERS)]
    results: dict[tuple, dict] = {}
    tmp = Path(tempfile.mkdtemp(prefix="p2p_matrix_"))

    def start(w):
        path = tmp / f"jobs{w}.json"
        path.write_text(json.dumps([list(c) + [m, d] for c, m, d in queues[w]]))
        return subprocess.Popen(
            [sys.executable, str(HERE / "combinations.py"), "worker", str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )

    procs = {w: start(w) for w in range(WORKERS) if queues[w]}
    deadline = {w: time.monotonic() + CASE_TIMEOUT_S for w in procs}
    while procs:
        ready, _, _ = select.select([p.stdout for p in procs.values()], [], [], 5.0)
        for w, p in list(procs.items()):
            if p.stdout in ready:
                line = p.stdout.readline()
                if line:
                    row = json.loads(line)
                    case, mode, _ = queues[w].pop(0)
                    results[(case, mode)] = row
                    deadline[w] = time.monotonic() + CASE_TIMEOUT_S
                    continue
                p.wait()
                if queues[w]:  # the worker died: its current case failed, go on
                    case, mode, _ = queues[w].pop(0)
                    err = p.stderr.read()[-2000:]
                    results[(case, mode)] = {"status": "error", "message": f"worker died: {err}"}
                if queues[w]:
                    procs[w] = start(w)
                    deadline[w] = time.monotonic() + CASE_TIMEOUT_S
                else:
                    del procs[w]
            elif time.monotonic() > deadline[w]:
                p.kill()
                p.wait()
                case, mode, _ = queues[w].pop(0)
                results[(case, mode)] = {
                    "status": "error",
                    "message": f"timed out after {CASE_TIMEOUT_S} s (a hang?)",
                }
                if queues[w]:
                    procs[w] = start(w)
                    deadline[w] = time.monotonic() + CASE_TIMEOUT_S
                else:
                    del procs[w]
    return results


@pytest.fixture(scope="module")
def matrix():
    cases = M.all_cases()
    refused = {c: M.refusal(c) for c in cases}
    accepted = [c for c in cases if refused[c] is None]
    jobs = _jobs(accepted)
    results = _run_workers(jobs)
    if os.environ.get("P2P_FMTL_MATRIX_OUT"):  # keep the raw rows (e.g. of a full run)
        rows = [{k: v for k, v in r.items() if k != "params"} for r in results.values()]
        Path(os.environ["P2P_FMTL_MATRIX_OUT"]).write_text(json.dumps(rows, indent=1))
    return {"cases": cases, "refused": refused, "jobs": jobs, "results": results}


def _failures(matrix, check) -> list[str]:
    out = []
    for (case, mode), row in matrix["results"].items():
        if row.get("status") != "ok":
            continue
        problem = check(case, mode, row)
        if problem:
            out.append(f"{M.case_id(case)} [{mode}]: {problem}")
    return out


def test_every_case_is_refused_with_one_line_or_runs(matrix):
    refused = [(c, m) for c, m in matrix["refused"].items() if m is not None]
    bad = []
    for case, message in refused:
        named = set(SETTING.findall(message))
        if "\n" in message or len(named) < 2:
            bad.append(f"{M.case_id(case)}: {message!r}")
    assert not bad, "refusals must be one line naming two settings:\n" + "\n".join(bad[:20])
    assert len(refused) < len(matrix["cases"])  # most of the matrix runs
    errors = [
        f"{M.case_id(c)} [{m}]: {r.get('message')}\n{r.get('traceback', '')}"
        for (c, m), r in matrix["results"].items()
        if r.get("status") != "ok"
    ]
    assert not errors, "accepted cases must run:\n" + "\n".join(errors[:10])
    covered = {c for c, _, _ in matrix["jobs"]}
    for axis, values in zip(
        M.AXES,
        (M._algorithm_variants(), M.EXCHANGES, M.SCHEDULES, M.FAULTS, M.COSTS),
        strict=True,
    ):
        i = M.AXES.index(axis)
        runnable = {
            c[i] for c, m in matrix["refused"].items() if m is None and c[0] not in M.FULL_ONLY
        }
        assert runnable <= {c[i] for c in covered}, axis  # every runnable value runs
        assert runnable, (axis, values)


def test_the_ledger_counts_what_crossed_each_edge(matrix):
    def check(case, mode, row):
        led = row["ledger"]
        if led["message_bytes"] != led["expected_message_bytes"]:
            return f"message bytes {led['message_bytes']} != {led['expected_message_bytes']}"
        if not led["bytes_total"] == led["expected"] == led["nodes_bytes"]:
            return f"bytes {led['bytes_total']} / nodes {led['nodes_bytes']} != {led['expected']}"
        # with the cost model on, time and energy are counted, and positive exactly when
        # something happened: a message crossed an edge or a node trained (a run of
        # `average` whose gossip rounds all found the star's hub down sends nothing)
        busy = led["bytes_total"] > 0 or M.trains(case[0])
        for key in ("sim_time_s", "energy_j"):
            value = row[key]
            if (case[4] == "on") != (value is not None) or (value or 0) > 0 and not busy:
                return f"cost model {case[4]} but {key} = {value}"
            if case[4] == "on" and busy and not value > 0:
                return f"cost model on, bytes {led['bytes_total']}, but {key} = {value}"
        return None

    bad = _failures(matrix, check)
    assert not bad, "\n".join(bad[:20])


def test_batched_runs_equal_runs_alone(matrix):
    def check(case, mode, row):
        b = row.get("batched")
        if b is None:
            return None
        if b["params_diff"] > 1e-6 or b["loss_diff"] > 1e-6:
            return (
                f"parameters / train loss differ by {b['params_diff']:.3g} / {b['loss_diff']:.3g}"
            )
        if b["bytes"][0] != b["bytes"][1] or b["sim_time"][0] != b["sim_time"][1]:
            return f"ledger or time differ: {b}"
        if b["energy"][0] != b["energy"][1]:
            return f"energy differs: {b['energy']}"
        if not b["seeds_differ"]:
            return "the second seed gave the same parameters"
        return None

    bad = _failures(matrix, check)
    assert not bad, "\n".join(bad[:20])
    assert any("batched" in r for r in matrix["results"].values())


def test_two_devices_equal_one_device(matrix):
    def check(case, mode, row):
        d = row.get("devices")
        if d is None:
            return None
        if d["shards"] != 2:
            return f"state on {d['shards']} devices"
        if d["params_diff"] > 1e-5 or d["loss_diff"] > 1e-5:
            return (
                f"parameters / train loss differ by {d['params_diff']:.3g} / {d['loss_diff']:.3g}"
            )
        if d["bytes"][0] != d["bytes"][1]:
            return f"ledger differs: {d['bytes']}"
        t1, t2 = d["sim_time"]
        if (t1 is None) != (t2 is None) or (t1 is not None and abs(t1 - t2) > 1e-6 * max(t1, 1)):
            return f"simulated time differs: {d['sim_time']}"
        e1, e2 = d["energy"]
        if (e1 is None) != (e2 is None) or (e1 is not None and abs(e1 - e2) > 1e-6 * max(e1, 1)):
            return f"energy differs: {d['energy']}"
        return None

    bad = _failures(matrix, check)
    assert not bad, "\n".join(bad[:20])
    assert any("devices" in r for r in matrix["results"].values())


def test_a_setting_with_a_nonzero_rate_changes_the_result(matrix):
    def check(case, mode, row):
        same = [k for k, diff in row["changes"].items() if diff <= 1e-7]
        return f"no effect of {same}" if same else None

    bad = _failures(matrix, check)
    assert not bad, "\n".join(bad[:20])
    assert any("finetune" in r["changes"] for r in matrix["results"].values() if "changes" in r)


def test_the_network_mean_is_kept_where_the_docs_say(matrix):
    def check(case, mode, row):
        if "mean_drift" not in row:
            return None
        ex = row["exchange"]
        if "weighted_drift" in row:  # push-sum keeps Σ y_i x_i
            return None if row["weighted_drift"] < 1e-4 else f"Σ y x drifts {row['weighted_drift']}"
        if ex in ("gossip", "pairwise", "choco") and row["mean_drift"] > 1e-5:
            return f"the mean drifts by {row['mean_drift']:.3g} ({ex})"
        if row.get("product_error", 0.0) > 1e-4:
            return f"final values differ from Π W_t x0 by {row['product_error']:.3g}"
        return None

    bad = _failures(matrix, check)
    assert not bad, "\n".join(bad[:20])


def test_docs_list_the_matrix(matrix):
    """``docs/combinations.md`` states the counts of this matrix (regenerate it with
    ``python tests/combinations.py docs``)."""
    text = (HERE.parent / "docs" / "combinations.md").read_text()
    expected = M.summary_counts(matrix["refused"])
    for line in expected:
        assert line in text, f"docs/combinations.md is out of date: missing {line!r}"
