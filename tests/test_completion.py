"""Tab completion, as a bash user installs it: `eval "$(pipeline train -sc install=bash)"`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = r'''
eval "$(pipeline train -sc install=bash)"
complete_line() {
  COMP_LINE="$1"; COMP_POINT=${#COMP_LINE}
  read -ra COMP_WORDS <<< "$COMP_LINE"
  [[ "$COMP_LINE" == *" " ]] && COMP_WORDS+=("")
  COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
  COMPREPLY=()
  hydra_bash_completion
  echo "${COMPREPLY[*]}"
}
complete_line "pipeline tr"
complete_line "pipeline train dat"
complete_line "pipeline tune dataset=s"
complete_line "pipeline tune tuner.cv"
complete_line "pipeline train model.poo"
complete_line "pipeline train dataset=mi"
'''


@pytest.mark.no_store  # asserts that completion leaves the directory empty
def test_bash_completes_commands_groups_options_and_keys(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    # a dataset of the directory's own (./conf, which the commands search first)
    (tmp_path / "conf" / "dataset").mkdir(parents=True)
    (tmp_path / "conf" / "dataset" / "mine.yaml").write_text("defaults:\n  - files\n  - _self_\nname: mine\npath: mine.csv\n")
    result = subprocess.run(["bash", "-c", SCRIPT], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert lines[0] == "train"
    assert "dataset=" in lines[1].split()
    assert set(lines[2].split()) == {f"dataset={o}" for o in ("sst2", "sst2_phrases", "subj")}
    assert set(lines[3].split()) == {"tuner.cv_auto.", "tuner.cv_folds="}
    assert lines[4].split() == ["model.pooling="]
    assert lines[5].split() == ["dataset=mine"]
    assert "error" not in result.stderr.lower(), result.stderr[-2000:]
    assert [p.name for p in tmp_path.iterdir()] == ["conf"]  # completion runs no job: no store, no outputs


def test_the_install_script_names_the_console_script(tmp_path: Path) -> None:
    script = subprocess.run(["pipeline", "train", "-sc", "install=bash"], cwd=tmp_path, capture_output=True, text=True,
                            env={**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"})
    assert script.returncode == 0, script.stderr
    assert script.stdout.rstrip().endswith("complete -o nospace -o default -F hydra_bash_completion pipeline")
