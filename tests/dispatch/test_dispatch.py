"""backend="auto": the trial, on CPU tensors, with stand-in backends registered for them.

``wrong`` gives a result that differs from the reference in one row, ``boom`` raises,
``oom`` runs out of memory, ``slow`` is right but slow, ``fast`` is right and quick,
``cold`` is right and the quickest once warm, but its first run (compilation) is the
slowest of all (its n-th warm run takes n * WARM_S: the median of its timed runs differs
with and without the warm-up). Time is a fake clock (tests.helpers.FakeClock) that only
the stand-ins and the reference (the ``torch`` candidate, timed while it checks the
others) advance, so which backend wins never depends on the machine.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import types
import warnings

import pytest
import torch

import laperm_kernels as lk
from laperm_kernels.ops import backends, decision_store, dispatch
from laperm_kernels.ops.reference import rank_match_reference_
from tests.helpers import (
    DTYPES,
    FakeClock,
    assert_bitwise_equal,
    num_threads,
    reference_result,
    tensor_group,
)

SLOW_S, REFERENCE_S, COLD_S, WARM_S = 0.2, 0.05, 10.0, 0.001
CLOCK = FakeClock()


def _stand_in(name, run):
    calls = []

    def counted(ws, ss):
        calls.append(len(ws))
        run(ws, ss)

    return types.SimpleNamespace(
        name=name,
        calls=calls,
        run=counted,
        is_available=lambda: True,
        unavailable_reason=lambda: "",
        supports=lambda device, dtype: device.type == "cpu",
    )


_reference = backends.BACKENDS["torch"].run  # the reference, tensor by tensor


def _wrong(ws, ss):
    _reference(ws, ss)
    ws[-1][1] = ws[-1][1].flip(0)  # last tensor, row 1: reversed


def _boom(ws, ss):
    raise RuntimeError("kernel exploded")


def _oom(ws, ss):
    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1 GiB")


def _slow(ws, ss):
    CLOCK.advance(SLOW_S)
    _reference(ws, ss)


def _cold(ws, ss):
    CLOCK.advance(COLD_S if _cold.runs == 0 else _cold.runs * WARM_S)
    _cold.runs += 1
    _reference(ws, ss)


_cold.runs = 0

STAND_INS = {
    "wrong": _wrong,
    "boom": _boom,
    "oom": _oom,
    "slow": _slow,
    "fast": _reference,
    "cold": _cold,
}


@pytest.fixture
def registry(monkeypatch, tmp_path):
    """Registers the stand-ins; ``registry(order)`` sets auto's order for CPU tensors."""
    monkeypatch.setenv("LAPERM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("LAPERM_AUTOTUNE", raising=False)
    made = {name: _stand_in(name, fn) for name, fn in STAND_INS.items()}
    for name, module in made.items():
        monkeypatch.setitem(backends.BACKENDS, name, module)

    def slow_reference(w, s):
        CLOCK.advance(REFERENCE_S)
        return rank_match_reference_(w, s)

    monkeypatch.setattr(dispatch, "rank_match_reference_", slow_reference)
    monkeypatch.setattr(dispatch, "DeviceTimer", CLOCK.timer)
    _cold.runs = 0
    dispatch.reset()

    def order(*names):
        monkeypatch.setitem(backends.AUTO_ORDER, "cpu", [*names, "torch"])
        return made

    yield order
    dispatch.reset()


def _model(shapes=((6, 40), (5, 33)), seed=0, dtype=torch.float32):
    return tensor_group([(shape, dtype) for shape in shapes], "special", seed)


def _run_exact(ws, ss, **kw):
    want = [reference_result(w, s) for w, s in zip(ws, ss)]
    used = lk.ops.rank_match_groups_(ws, ss, **kw).used
    for i, (w, e) in enumerate(zip(ws, want)):
        assert_bitwise_equal(w, e, f"tensor {i}")
    return used


@pytest.mark.parametrize("dtype", DTYPES)
def test_trial_drops_the_wrong_backend_and_keeps_the_fastest_correct_one(registry, dtype):
    made = registry("wrong", "slow", "fast")
    ws, ss = _model(dtype=dtype)
    name = str(dtype).replace("torch.", "")
    with pytest.warns(
        RuntimeWarning,
        match=rf"'wrong' failed its check .*{name}: tensor 1 "
        r"\(shape \(5, 33\)\), row 1",
    ):
        used = _run_exact(ws, ss)
    assert used == [(torch.device("cpu"), dtype, "fast")]
    [decision] = lk.dispatch_report()
    assert decision["backend"] == "fast" and decision["source"] == "trial"
    assert decision["signature"]["shapes"] == [[6, 40], [5, 33]]
    verdicts = {v["backend"]: v for v in decision["candidates"]}
    assert {k: v["verdict"] for k, v in verdicts.items()} == {
        "wrong": "mismatch",
        "slow": "bit-identical",
        "fast": "bit-identical",
        "torch": "reference",
    }
    assert verdicts["fast"]["seconds"] < verdicts["torch"]["seconds"] < verdicts["slow"]["seconds"]
    assert "row 1" in verdicts["wrong"]["detail"]

    # from now on: straight to the choice, one call, nothing else runs, no warning
    calls = {n: len(m.calls) for n, m in made.items()}
    ws, ss = _model(seed=1, dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _run_exact(ws, ss)
    assert {n: len(m.calls) - calls[n] for n, m in made.items()} == {
        "wrong": 0,
        "boom": 0,
        "oom": 0,
        "slow": 0,
        "fast": 1,
        "cold": 0,
    }


def test_a_banned_backend_is_never_used_again_for_that_device_and_dtype(registry):
    made = registry("wrong", "fast")
    with pytest.warns(RuntimeWarning, match="'wrong'"):
        _run_exact(*_model())
    tried = len(made["wrong"].calls)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _run_exact(*_model(shapes=[(3, 70), (2, 9)]))  # a new signature: a new trial
    assert len(made["wrong"].calls) == tried  # ... without the banned backend
    assert [v["backend"] for v in lk.dispatch_report()[-1]["candidates"]] == ["fast", "torch"]
    # another dtype is another question: wrong is tried (and dropped) again there
    with pytest.warns(RuntimeWarning, match="'wrong'.*float64"):
        _run_exact(*_model(dtype=torch.float64))


def test_a_raising_backend_is_dropped_and_named(registry):
    registry("boom", "fast")
    with pytest.warns(RuntimeWarning, match="'boom' failed its check.*kernel exploded"):
        used = _run_exact(*_model())
    assert used[0][2] == "fast"
    assert lk.dispatch_report()[0]["candidates"][0]["verdict"] == "error"


def test_caller_gets_the_reference_when_the_last_candidate_is_wrong(registry):
    # the trial's copies then hold a wrong result: the weights get the reference instead
    registry("fast", "wrong")
    with pytest.warns(RuntimeWarning, match="'wrong'"):
        assert _run_exact(*_model())[0][2] == "fast"


def test_when_only_the_reference_is_right_it_is_chosen(registry):
    registry("wrong", "boom")
    with pytest.warns(RuntimeWarning):
        assert _run_exact(*_model())[0][2] == "torch"


def test_autotune_off_is_the_fixed_order(registry, monkeypatch):
    made = registry("slow", "fast")
    monkeypatch.setenv("LAPERM_AUTOTUNE", "0")
    assert _run_exact(*_model())[0][2] == "slow"
    assert len(made["slow"].calls) == 1 and made["fast"].calls == []
    assert lk.dispatch_report() == []


def test_an_explicit_backend_never_holds_a_trial(registry):
    made = registry("fast")
    _run_exact(*_model(), backend="slow")
    assert len(made["slow"].calls) == 1 and made["fast"].calls == []
    assert lk.dispatch_report() == []


def test_decisions_survive_a_restart_through_the_disk_cache(registry):
    made = registry("slow", "fast")
    _run_exact(*_model())
    with open(decision_store.cache_path()) as f:
        [entry] = json.load(f).values()
    assert entry["backend"] == "fast"
    dispatch.reset()  # what a new process starts with
    before = {n: len(m.calls) for n, m in made.items()}
    _run_exact(*_model(seed=3))
    assert {n: len(m.calls) - before[n] for n, m in made.items() if n in ("slow", "fast")} == {
        "slow": 0,
        "fast": 1,
    }
    assert [d["source"] for d in lk.dispatch_report()] == ["disk cache"]


def test_a_corrupt_cache_is_ignored_with_a_warning_and_rewritten(registry):
    registry("fast")
    path = decision_store.cache_path()
    os.makedirs(os.path.dirname(path))
    with open(path, "w") as f:
        f.write('{"truncated')
    with pytest.warns(RuntimeWarning, match="ignoring the dispatch cache"):
        _run_exact(*_model())
    with open(path) as f:
        assert len(json.load(f)) == 1


def test_an_unwritable_cache_is_not_fatal(registry, monkeypatch, tmp_path):
    registry("fast")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("LAPERM_CACHE_DIR", str(blocker / "cache"))
    with pytest.warns(RuntimeWarning, match="cannot write the dispatch cache"):
        assert _run_exact(*_model())[0][2] == "fast"


def test_threads_meeting_a_new_signature_share_one_trial(registry):
    made = registry("fast")
    models = [_model(seed=i) for i in range(4)]
    errors = []

    def work(ws, ss):
        try:
            _run_exact(ws, ss)
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=m) for m in models]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and not any(t.is_alive() for t in threads)
    assert len(lk.dispatch_report()) == 1
    trial_runs = len(made["fast"].calls) - 3  # the three other threads' direct calls
    assert 2 <= trial_runs <= 1 + dispatch.MAX_TIMED_RUNS


def test_laperm_training_is_unaffected(registry):
    registry("wrong", "fast")

    def train(backend):
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(12, 20), torch.nn.ReLU(), torch.nn.Linear(20, 3))
        opt = lk.LaPerm(torch.optim.Adam(net.parameters(), lr=1e-2), sync_period=2, backend=backend)
        x = torch.randn(8, 12)
        for _ in range(5):
            opt.zero_grad()
            net(x).square().mean().backward()
            opt.step()
        return opt, [p.detach().clone() for p in net.parameters()]

    with pytest.warns(RuntimeWarning, match="'wrong'"):
        opt, auto = train("auto")
    _, ref = train("torch")
    for a, b in zip(auto, ref):
        assert_bitwise_equal(a, b, "LaPerm(Adam) parameters")
    assert opt.sync_backends == {"cpu float32": "fast"}


def test_real_backends_across_processes(tmp_path):
    # the real cpu/torch backends, two fresh processes sharing one cache directory
    expected = sorted(lk.available_backends("cpu"))
    if len(expected) == 1:  # no extension: the reference is the only candidate
        pytest.skip("one backend for CPU tensors here: nothing to choose")
    code = (
        "import torch, laperm_kernels as lk\n"
        "w = torch.randn(64, 300, generator=torch.Generator().manual_seed(0))\n"
        "lk.rank_match_(w, lk.sort_rows(w.flip(1)))\n"
        "[d] = lk.dispatch_report()\n"
        "print(d['source'], d['backend'], sorted(c['backend'] for c in d['candidates']),"
        " sep='|')\n"
    )
    env = dict(os.environ, LAPERM_CACHE_DIR=str(tmp_path))
    env.pop("LAPERM_AUTOTUNE", None)
    runs = []
    for _ in range(2):
        proc = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 0, proc.stderr
        runs.append(proc.stdout.strip().split("|"))
    (source1, backend1, candidates1), (source2, backend2, candidates2) = runs
    assert (source1, source2) == ("trial", "disk cache") and backend1 == backend2
    assert eval(candidates1) == eval(candidates2) == expected


# --- honest trials ---------------------------------------------------------------------


def test_a_backend_is_timed_warm_not_by_its_compilation(registry):
    # cold's first run (compilation) takes longer than the whole budget; once warm it is
    # the fastest. A trial that stopped at the warm-up would have scored it 10 s, and one
    # that took the warm-up into the median 2.5 ms: its warm runs take 1, 2 and 3 ms.
    registry("slow", "cold")
    assert _run_exact(*_model())[0][2] == "cold"
    [decision] = lk.dispatch_report()
    verdicts = {v["backend"]: v for v in decision["candidates"]}
    assert verdicts["cold"]["warmup_seconds"] == pytest.approx(COLD_S)
    assert verdicts["cold"]["seconds"] == pytest.approx(2 * WARM_S)
    assert verdicts["cold"]["runs"] == dispatch.MAX_TIMED_RUNS
    assert verdicts["slow"]["runs"] >= 1 and verdicts["torch"]["runs"] >= 1
    # the reference's time is from its warm runs too (the first one is its warm-up)
    assert verdicts["torch"]["seconds"] == pytest.approx(2 * REFERENCE_S)
    assert "warm-up 10000.000 ms" in decision_store.Verdict(**verdicts["cold"]).text()


def test_the_reference_gets_a_timed_run_when_it_has_one_rival(registry):
    made = registry("fast")
    ws, ss = _model()
    _run_exact(ws, ss)
    [decision] = lk.dispatch_report()
    torch_verdict = decision["candidates"][-1]
    assert torch_verdict["backend"] == "torch" and torch_verdict["runs"] == 1
    assert torch_verdict["warmup_seconds"] is not None
    assert len(made["fast"].calls) == 1 + dispatch.MAX_TIMED_RUNS


def test_a_trial_missing_a_candidate_for_lack_of_memory_is_not_saved(registry):
    registry("oom", "fast")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # out of memory bans nothing
        assert _run_exact(*_model())[0][2] == "fast"
    [decision] = lk.dispatch_report()
    assert decision["candidates"][0]["verdict"] == "out of memory"
    assert not os.path.exists(decision_store.cache_path())
    dispatch.reset()  # a new process tries oom again
    _run_exact(*_model())
    assert [v["backend"] for v in lk.dispatch_report()[0]["candidates"]] == ["oom", "fast", "torch"]


# --- bans and the disk cache ------------------------------------------------------------


def test_a_ban_found_on_disk_is_announced_once_with_when_why_and_how(registry):
    made = registry("wrong", "fast")
    with pytest.warns(RuntimeWarning, match="'wrong' failed its check"):
        _run_exact(*_model())
    dispatch.reset()  # a new process, the same cache
    tried = len(made["wrong"].calls)
    with pytest.warns(RuntimeWarning) as caught:
        _run_exact(*_model(seed=1))
    [warning] = [w for w in caught if "'wrong'" in str(w.message)]
    message = str(warning.message)
    for part in (
        "'wrong' is banned",
        "float32",
        r"row 1",
        "mismatch",
        decision_store.cache_path(),
        "delete",
    ):
        assert part in message, message
    assert re.search(r"on \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", message), message
    assert len(made["wrong"].calls) == tried  # not run again, neither by the trial
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per process
        _run_exact(*_model(seed=2))
        _run_exact(*_model(shapes=[(3, 70), (2, 9)]))  # a new trial: wrong left out
    assert len(made["wrong"].calls) == tried
    assert "wrong" not in [v["backend"] for v in lk.dispatch_report()[-1]["candidates"]]


@pytest.mark.parametrize(
    "content",
    [
        "[" * 100_000,  # json.load raises RecursionError
        '{"k": {"backend": 3}}',  # valid JSON, not decisions
        '{"k": {"backend": "fast", "candidates": 7}}',
        b"\xff\xfe not utf-8",
    ],
    ids=["deeply-nested", "backend-not-a-name", "candidates-not-a-list", "not-utf-8"],
)
def test_any_unreadable_cache_is_ignored_with_one_warning(registry, content):
    registry("fast")
    path = decision_store.cache_path()
    os.makedirs(os.path.dirname(path))
    with open(path, "wb") as f:
        f.write(content if isinstance(content, bytes) else content.encode())
    with pytest.warns(RuntimeWarning, match="ignoring the dispatch cache") as caught:
        assert _run_exact(*_model())[0][2] == "fast"
    assert sum("ignoring the dispatch cache" in str(w.message) for w in caught) == 1
    with open(path) as f:
        assert len(json.load(f)) == 1  # rewritten with this trial's decision


def test_each_thread_count_gets_its_own_trial_and_disk_entry(registry):
    registry("fast")
    for n in (1, 2):
        with num_threads(n):
            _run_exact(*_model())
    report = lk.dispatch_report()
    assert [d["signature"]["threads"] for d in report] == [1, 2]
    assert [d["source"] for d in report] == ["trial", "trial"]
    with open(decision_store.cache_path()) as f:
        assert sorted(json.loads(k)["threads"] for k in json.load(f)) == [1, 2]
