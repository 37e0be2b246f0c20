"""The model file's metadata keys have one list (nasrt/contract/metadata_keys.txt): Python
reads it, the CMake build makes the C header of it, docs/FORMATS.md shows it, and no
key is spelt out anywhere else."""
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from nasrt.contract import modelfile
from nasrt.contract.modelfile import METADATA_KEYS

ROOT = Path(__file__).resolve().parents[1]
KEYS = {k.key for k in METADATA_KEYS}


def test_python_constants_are_the_list():
    consts = {name[4:]: v for name, v in vars(modelfile).items() if name.startswith("KEY_") and name != "KEYS_FILE"}
    assert consts == {k.name: k.key for k in METADATA_KEYS}
    assert len(KEYS) == len(METADATA_KEYS) and len({k.name for k in METADATA_KEYS}) == len(METADATA_KEYS)


def test_c_header_made_by_cmake_has_the_same_keys(tmp_path):
    if not shutil.which("cmake"):
        pytest.skip("cmake not installed")
    header = tmp_path / "nasrt" / "metadata_keys.h"
    r = subprocess.run(["cmake", f"-DKEYS={modelfile.KEYS_FILE}", f"-DHEADER={header}", "-P",
                        str(ROOT / "cmake" / "metadata_keys.cmake")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    defines = re.findall(r'^#define NASRT_KEY_(\w+) "([^"]*)"$', header.read_text(), re.M)
    assert defines == [(k.name, k.key) for k in METADATA_KEYS]


def _code(text: str, comment: str) -> str:
    """The text without comments (C++: // and /* */; Python: #), strings kept."""
    if comment == "//":
        text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return "\n".join(line.split(comment, 1)[0] if comment in line else line for line in text.splitlines())


def test_no_key_is_spelt_out_in_cpp_or_python():
    """The C++ uses NASRT_KEY_*, Python KEY_*: a literal here would not follow an edit of the list."""
    found = []
    for path in [*ROOT.glob("csrc/**/*.cpp"), *ROOT.glob("csrc/**/*.h"), *ROOT.glob("csrc/**/*.hpp")]:
        code = _code(path.read_text(), "//")
        found += [(path, k) for k in KEYS if re.search(rf'"[^"\n]*{re.escape(k)}\b', code)]
    for path in [*ROOT.glob("nasrt/**/*.py"), *ROOT.glob("tools/*.py")]:
        code = _code(path.read_text(), "#")
        for k in KEYS:
            if re.search(rf"[\"']{re.escape(k)}[\"']", code) and not (path.name == "plan.py" and k == "nasrt.plan"):
                found.append((path, k))  # plan.py: "nasrt.plan" is also the plan.json format's name
    assert not found


def test_formats_md_table_is_the_list():
    text = (ROOT / "docs" / "FORMATS.md").read_text()
    table = text[text.index("**Metadata**"):]
    table = table[:table.index("\n\n", table.index("|"))]
    rows = re.findall(r"^\| `([^`]+)` \| (.*) \|$", table, re.M)
    assert rows == [(k.key, k.meaning) for k in METADATA_KEYS]
