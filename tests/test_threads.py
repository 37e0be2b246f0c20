"""Threading: bitwise determinism, GIL release, concurrent callers, pinning."""
import os
import random
import threading
import time

import numpy as np
import pytest

import nasrt
from _helpers import random_plan, sample_input
from nasrt.runtime.bench import paper_sized_plan, write_random_model


@pytest.mark.parametrize("seed", range(8))
def test_multi_thread_equals_single_thread_bitwise(seed, tmp_path):
    plan = random_plan(random.Random(500 + seed))
    path = tmp_path / "m.nasrt"
    write_random_model(plan, path, seed=seed)
    x = sample_input(plan, n=2, seed=seed)
    single = nasrt.Runtime(path, threads=1).run(x)
    for threads in range(2, plan.num_paths + 1):
        rt = nasrt.Runtime(path, threads=threads)
        for _ in range(20):
            np.testing.assert_array_equal(rt.run(x), single)


def test_gil_released_while_running(paper_model):
    plan, path, _ = paper_model
    rt = nasrt.Runtime(path, threads=1)
    x = sample_input(plan, n=400)  # a long call: ~80 ms
    ticks = 0
    done = threading.Event()

    def count():
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            time.sleep(0.0005)

    t = threading.Thread(target=count)
    t.start()
    time.sleep(0.01)
    before = ticks
    rt.run(x)
    during = ticks - before
    done.set()
    t.join()
    # With the GIL held the counter could not advance at all during the call.
    assert during >= 10, f"other thread made only {during} steps during a long run"


def test_concurrent_callers_get_correct_results(paper_model):
    plan, path, _ = paper_model
    rt = nasrt.Runtime(path)
    inputs = [sample_input(plan, n=3, seed=s) for s in range(6)]
    expected = [rt.run(x) for x in inputs]
    errors = []

    def worker(i):
        for _ in range(30):
            y = rt.run(inputs[i])
            if not np.array_equal(y, expected[i]):
                errors.append(i)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


@pytest.mark.parametrize("seed", range(4))
def test_runtime_from_plan_is_the_runtime_of_its_file(seed, tmp_path):
    """Runtime.from_plan (in memory, no file) runs what Runtime(file) runs: the same
    kernels and bitwise the same logits; bad tensors are a ModelError naming it."""
    from nasrt.runtime.bench import random_tensors
    plan = random_plan(random.Random(700 + seed))
    path = tmp_path / "m.nasrt"
    tensors = write_random_model(plan, path, seed=seed)
    x = sample_input(plan, n=2, seed=seed)
    for threads in sorted({1, plan.num_paths}):
        mem = nasrt.Runtime.from_plan(plan, tensors, threads=threads)
        rt = nasrt.Runtime(path, threads=threads)
        assert mem.kernels == rt.kernels and mem.plan == rt.plan and mem.path is None
        np.testing.assert_array_equal(mem.run(x), rt.run(x))
    bad = dict(random_tensors(plan, seed))
    bad.pop(sorted(bad)[0])
    with pytest.raises(nasrt.ModelError, match="missing"):
        nasrt.Runtime.from_plan(plan, bad)


def test_threads_default_and_bounds(tmp_path):
    plan = paper_sized_plan()
    path = tmp_path / "m.nasrt"
    write_random_model(plan, path)
    from nasrt.runtime.runtime import available_cores

    rt = nasrt.Runtime(path)
    assert rt.threads == min(2, len(available_cores())) and rt.paths == 2
    assert rt.pinned_cores[0] == -1  # the calling thread is never pinned
    for bad in (0, 3, -1, 1.5, True):
        with pytest.raises(nasrt.ModelError, match="threads"):
            nasrt.Runtime(path, threads=bad)
    with pytest.raises(nasrt.ModelError, match="cores"):
        nasrt.Runtime(path, threads=2, cores=[0])


def test_worker_pinned_to_requested_core(tmp_path):
    from nasrt.runtime.runtime import available_cores

    cores = available_cores()
    if len(cores) < 2:
        pytest.skip("needs 2 cores")
    path = tmp_path / "m.nasrt"
    write_random_model(paper_sized_plan(), path)
    rt = nasrt.Runtime(path, threads=2, cores=[cores[0], cores[1]])
    assert rt.pinned_cores == [-1, cores[1]]


def test_many_runtimes_created_and_destroyed(tmp_path):
    """Worker threads shut down cleanly (no hang, no leak of running threads)."""
    path = tmp_path / "m.nasrt"
    plan = paper_sized_plan(paths=2)
    write_random_model(plan, path)
    x = sample_input(plan, n=1)
    before = len(os.listdir("/proc/self/task"))
    ref = nasrt.Runtime(path, threads=1).run(x)
    for _ in range(30):
        rt = nasrt.Runtime(path, threads=2)
        assert np.array_equal(rt.run(x), ref)
        del rt
    # Native workers are not Python threads: count the process's OS threads.
    tasks = len(os.listdir("/proc/self/task"))
    assert tasks <= before + 8, f"{tasks} OS threads left running"
