"""Pages generated from the code are current."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_config_reference_is_generated_from_the_current_schema():
    r = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "make_config_reference.py"), "--check"], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_every_kind_of_key_is_on_the_page():  # the check above can fail: the page lists the keys
    page = (ROOT / "docs" / "config.md").read_text()
    for key in ("seed", "stage1.mixing.segmix.label_mix", "relabel.scales", "cams.refine_steps"):
        assert f"| `{key}` |" in page, key
