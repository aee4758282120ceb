"""No absolute path of a development machine in the repository (a clone elsewhere must work as is)."""

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# spelled in pieces so that this file does not match itself
DEV_PATH = re.compile("(?<![\\w.])/(?:" + "|".join(["wo" + "rk", "ro" + "ot", "ho" + "me/\\w+", "Us" + "ers/\\w+"]) + ")/")


def _tracked_text_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
        names = out.splitlines()
    except (OSError, subprocess.CalledProcessError):  # an sdist without git: every file under the root
        names = [str(p.relative_to(ROOT)) for p in ROOT.rglob("*") if p.is_file() and ".git" not in p.parts]
    files = []
    for name in names:
        path = ROOT / name
        if path.is_file() and path.suffix not in {".onnx", ".npz", ".png", ".bin"}:
            files.append(path)
    return files


def test_no_absolute_development_paths():
    hits = []
    for path in _tracked_text_files():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if DEV_PATH.search(line):
                hits.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:120]}")
    assert not hits, "absolute development paths:\n" + "\n".join(hits)


def test_the_pattern_catches_what_it_should():
    assert DEV_PATH.search("see " + "/wo" + "rk/shared/x") and DEV_PATH.search("/ho" + "me/alice/q")
    assert not DEV_PATH.search("docs/wo" + "rk/x") and not DEV_PATH.search("https://example.org/home/")
