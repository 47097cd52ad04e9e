"""bench/demo_seeds.py --again never overwrites an earlier rerun (published tables print it)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import demo_seeds  # noqa: E402


def test_again_refuses_a_rerun_already_stored_and_runs_into_another_folder(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(demo_seeds, "RESULTS", tmp_path)
    ran = []
    monkeypatch.setattr(demo_seeds, "run_demo", lambda demo, seed: ran.append((demo, seed)) or {})
    monkeypatch.setattr(demo_seeds, "table", lambda: None)
    stored = tmp_path / "again" / "flops-s0.json"
    stored.parent.mkdir()
    stored.write_text('{"published": true}')
    with pytest.raises(SystemExit) as exit_:
        demo_seeds.main(["--seeds", "0,1", "--demos", "flops", "--again"])
    assert exit_.value.code == 2 and "give --into NAME" in capsys.readouterr().err
    assert stored.read_text() == '{"published": true}' and ran == []  # nothing ran or changed
    assert demo_seeds.main(["--seeds", "0", "--demos", "flops", "--again", "--into", "new"]) == 0
    assert ran == [("flops", 0)] and (tmp_path / "new" / "flops-s0.json").exists()
    assert stored.read_text() == '{"published": true}'
