"""The runtime installs and runs without torch."""
import subprocess
import sys
import textwrap


def test_runtime_works_without_torch(paper_model):
    plan, path, _ = paper_model
    code = textwrap.dedent(f"""
        import sys
        sys.modules['torch'] = None  # any 'import torch' now fails
        import numpy as np, nasrt
        rt = nasrt.Runtime({str(path)!r})
        y = rt.run(np.zeros((1, 3, 32, 32), np.float32))
        assert y.shape == (1, 10)
        assert 'torch' not in [m for m in sys.modules if sys.modules[m] is not None]
        print('ok')
    """)
    _run_without_torch(code, path.parent)


def test_profile_and_latency_model_work_without_torch(tmp_path):
    """The latency table is measured on the target board, which may have no torch."""
    code = textwrap.dedent(f"""
        import sys
        sys.modules['torch'] = None
        from nasrt.cli import main
        assert main(['profile', '--out', {str(tmp_path / 'lut.json')!r}, '--runs', '4', '--rounds', '2',
                     '--span', '0', '--quiet']) == 0
        from nasrt.contract.lut import load_lut
        from nasrt.contract.latency import predict_latency
        from nasrt.contract.plan import Plan
        from nasrt.contract.space import SearchSpace
        lut = load_lut({str(tmp_path / 'lut.json')!r})
        sp = SearchSpace().bind((1, 28, 28), 10)
        from nasrt.contract.plan import Block
        plan = Plan((1, 28, 28), 10, sp.stem_block,
                    tuple(tuple(Block('conv', 3, s, c) for c, s in zip(sp.channels, sp.strides))
                          for _ in range(sp.paths)), hidden=tuple(sp.hidden))
        lat = predict_latency(plan, lut, 1)
        assert lat > 0, lat
        print('ok', lut.settings['rounds'])
    """)
    assert "ok 2" in _run_without_torch(code, tmp_path)


def _run_without_torch(code: str, cwd) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=cwd)  # not the source tree
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr
    return out.stdout


def _runtime_side_modules() -> list[str]:
    """Every module that must import without torch: the contract, data and runtime
    packages (walked, not listed), the CLI and the search settings it reads."""
    import pkgutil

    import nasrt.contract
    import nasrt.data
    import nasrt.quant
    import nasrt.runtime
    mods = ["nasrt", "nasrt.cli", "nasrt.errors", "nasrt._io", "nasrt._progress", "nasrt.search.config"]
    for pkg in (nasrt.contract, nasrt.data, nasrt.quant, nasrt.runtime):
        mods += [pkg.__name__] + [f"{pkg.__name__}.{m.name}" for m in pkgutil.iter_modules(pkg.__path__)]
    return mods


RUNTIME_MODULES = _runtime_side_modules()


def test_runtime_side_imports_and_commands_without_torch_or_peers(paper_model, tmp_path):
    """The torch-free boundary: with torch, onnx and onnxruntime blocked (a runtime-only
    install), every runtime-side module imports and info, run, tune and bench work."""
    _, path, _ = paper_model
    code = textwrap.dedent(f"""
        import sys, importlib
        for m in ('torch', 'onnx', 'onnxruntime', 'openvino'):
            sys.modules[m] = None
        for m in {RUNTIME_MODULES!r}:
            importlib.import_module(m)
        import numpy as np
        from nasrt.cli import main
        np.save({str(tmp_path / 'x.npy')!r}, np.zeros((3, 32, 32), np.float32))
        assert main(['info', {str(path)!r}]) == 0
        assert main(['run', {str(path)!r}, {str(tmp_path / 'x.npy')!r}]) == 0
        assert main(['tune', {str(path)!r}]) == 0
        assert main(['bench', {str(path)!r}, '--runs', '20', '--warmup', '2']) == 0
        assert not [m for m in ('torch', 'onnxruntime') if sys.modules.get(m) is not None]
        print('ok')
    """)
    out = _run_without_torch(code, tmp_path)
    assert "nasrt 1 thread" in out and "skipped" in out
