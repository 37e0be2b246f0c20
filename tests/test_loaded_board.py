"""The runtime on a board that is not idle: a path thread whose core is taken,
fork() and interpreter exit in the middle of a run, inputs that would overflow,
denormals, cores outside the process's mask."""
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import nasrt
from _helpers import run_py, sample_input
from nasrt import _core
from nasrt.contract.modelfile import write_model
from nasrt.errors import ModelError
from nasrt.runtime.bench import paper_sized_plan, random_tensors, write_random_model
from nasrt.runtime.runtime import available_cores

PLAN = paper_sized_plan()


@pytest.fixture
def model(tmp_path):
    path = tmp_path / "m.nasrt"
    write_random_model(PLAN, path)
    return path




def _realtime_hog(core: int) -> subprocess.Popen:
    """A SCHED_FIFO busy loop on `core`: no normal thread runs there while it does (the
    kernel's RT throttling still leaves them ~5%), a deterministic stand-in for a core that
    another process holds. Skips where real-time scheduling is not allowed."""
    code = textwrap.dedent(f"""
        import os, sys, time
        os.sched_setaffinity(0, {{{core}}})
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
        except OSError:
            print("no-rt", flush=True); sys.exit(0)
        print("ready", flush=True)
        end = time.monotonic() + 20
        while time.monotonic() < end:
            pass
    """)
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    if p.stdout.readline().strip() != "ready":
        p.wait()
        pytest.skip("real-time scheduling is not permitted here")
    return p


def test_a_path_thread_whose_core_is_taken_does_not_stall_the_run(model):
    """The worker's core is held by a real-time process, so the worker cannot run: the
    caller takes its share over (same ops: bitwise the same result) instead of waiting
    for the worker's next time slice (before: each run waited for RT throttling, ~1 s)."""
    cores = available_cores()
    if len(cores) < 2:
        pytest.skip("needs 2 cores")
    x = sample_input(PLAN, n=1)
    ref = nasrt.Runtime(model, threads=1).run(x)
    rt = nasrt.Runtime(model, threads=2, cores=[cores[0], cores[1]])
    assert np.array_equal(rt.run(x), ref)
    main_mask = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cores[0]})  # this (calling) thread only: keep it off the hog's core
    hog = _realtime_hog(cores[1])
    try:
        time.sleep(0.05)
        before = rt.taken_over
        t0 = time.monotonic()
        for _ in range(50):
            assert np.array_equal(rt.run(x), ref)
        elapsed = time.monotonic() - t0
        # Measured adaptation: P threads gain nothing here, so the caller goes on alone.
        for _ in range(1500):
            rt.run(x)
        solo = rt.solo_runs
        assert np.array_equal(rt.run(x), ref)
    finally:
        hog.kill()
        hog.wait()
        os.sched_setaffinity(0, main_mask)
    assert rt.taken_over > before, "the caller never took over the blocked worker's share"
    assert solo > 0, "the runtime kept using a thread that could not run"
    # Not a timing test: a generous bound that only a stalled run (>= one RT throttling
    # window of ~1 s per run) could exceed.
    assert elapsed < 10, f"50 runs took {elapsed:.1f} s with the worker's core held"


def test_more_threads_than_cores_still_runs_every_op(tmp_path):
    plan = paper_sized_plan(paths=4)
    path = tmp_path / "m4.nasrt"
    write_random_model(plan, path)
    x = sample_input(plan, n=3)
    ref = nasrt.Runtime(path, threads=1).run(x)
    if len(available_cores()) >= 4:
        pytest.skip("host has >= 4 cores")
    with pytest.warns(UserWarning, match="cores are available"):
        rt = nasrt.Runtime(path, threads=4)
    for _ in range(50):
        assert np.array_equal(rt.run(x), ref)


def test_fork_while_another_thread_is_inside_run(model):
    """The child used to inherit the run lock held by the parent's running thread and
    block forever in its first run()."""
    r = run_py(f"""
        import os, threading, time, numpy as np, nasrt
        rt = nasrt.Runtime({str(model)!r}, threads=2)
        x = np.ones((4, 3, 32, 32), np.float32)
        ref = rt.run(x)
        stop = False
        def spin():
            while not stop:
                rt.run(x)
        t = threading.Thread(target=spin)
        t.start()
        codes = []
        for _ in range(8):
            time.sleep(0.01)
            pid = os.fork()
            if pid == 0:
                os._exit(0 if np.array_equal(rt.run(x), ref) else 1)
            for _ in range(1000):  # 10 s
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    codes.append(os.waitstatus_to_exitcode(status))
                    break
                time.sleep(0.01)
            else:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                codes.append("hung")
        stop = True
        t.join()
        print("children", codes)
    """, timeout=120)
    assert "children [0, 0, 0, 0, 0, 0, 0, 0]" in r.stdout, (r.stdout, r.stderr)


@pytest.mark.parametrize("threads", [1, 2])
def test_interpreter_exit_with_daemon_threads_inside_run(model, threads):
    """CPython ends daemon threads with pthread_exit when they re-take the GIL at exit:
    the forced unwind used to hit a noexcept destructor (terminate, SIGABRT, exit 134)."""
    code = f"""
        import threading, time, numpy as np, nasrt
        rt = nasrt.Runtime({str(model)!r}, threads={threads})
        x = np.ones((64, 3, 32, 32), np.float32)
        def loop():
            while True:
                rt.run(x)
        for _ in range(3):
            threading.Thread(target=loop, daemon=True).start()
        time.sleep(0.2)
        print("exiting", flush=True)
    """
    for _ in range(4):
        r = run_py(code, timeout=60)
        assert r.returncode == 0 and "terminate called" not in r.stderr, (r.returncode, r.stderr[-500:])


@pytest.mark.parametrize("backend", _core.compiled_backends())
def test_inputs_that_would_overflow_are_rejected(model, backend):
    rt = nasrt.Runtime(model, threads=1, backend=backend)
    x = np.zeros((2, 3, 32, 32), np.float32)
    x[1, 0, 3, 3] = 3e38  # finite, but the net overflows: the fast backends' ReLU hid it
    with pytest.raises(ModelError, match=r"input: holds values beyond \+-1e6 \(sample 1\)"):
        rt.run(x)
    x[1, 0, 3, 3] = -1e6  # the documented bound itself is accepted
    assert np.isfinite(rt.run(x)).all()


def test_denormals_are_flushed_on_every_thread(tmp_path):
    """FTZ/DAZ on the path threads and the caller: denormal activations are zero (they made
    the reference kernels 2-3x slower), alike on 1 and P threads, and the caller's FP mode
    is restored after run()."""
    t = {k: (np.zeros_like(v) if k.endswith("bias") or "running_mean" in k else v) for k, v in random_tensors(PLAN).items()}
    path = tmp_path / "d.nasrt"
    write_model(path, PLAN, t)
    x = np.full((1, 3, 32, 32), 1e-39, np.float32)  # denormal input: zero under DAZ
    one = nasrt.Runtime(path, threads=1, backend="reference").run(x)
    two = nasrt.Runtime(path, threads=2, backend="reference").run(x)
    assert np.array_equal(one, two)
    assert not one.any(), "denormal input was not treated as zero"
    # The caller's own arithmetic is untouched: numpy still sees denormals.
    assert np.float32(1e-39) * np.float32(2) != 0


@pytest.mark.parametrize("cores, message", [([0, 4096], "core 4096 is not one this process may run on"),
                                            ([0, -1], "core -1 is not one this process may run on")])
def test_cores_outside_the_affinity_mask_are_an_error(model, cores, message):
    with pytest.raises(ModelError, match=message):
        nasrt.Runtime(model, threads=2, cores=cores)


def test_a_core_given_to_two_workers_is_an_error(tmp_path):
    if len(available_cores()) < 2:
        pytest.skip("needs 2 cores")
    plan = paper_sized_plan(paths=3)
    path = tmp_path / "m3.nasrt"
    write_random_model(plan, path)
    c = available_cores()[1]
    with pytest.warns(UserWarning), pytest.raises(ModelError, match=f"core {c} given to two worker threads"):
        nasrt.Runtime(path, threads=3, cores=[0, c, c])


def test_adapt_false_never_runs_alone(model):
    """A fixed configuration (benchmarks, latency probes) keeps its P threads."""
    rt = nasrt.Runtime(model, threads=2, adapt=False)
    x = sample_input(PLAN, n=1)
    for _ in range(3000):
        rt.run(x)
    assert rt.solo_runs == 0
