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
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=path.parent)  # not the source tree
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr
