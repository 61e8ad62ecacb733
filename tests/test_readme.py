"""The README is the interface: its commands are the ones CI runs, its option lists are real."""

from __future__ import annotations

import re

from pipeline.config import CONF_DIR

REPO = CONF_DIR.parent
README = (REPO / "README.md").read_text(encoding="utf-8")


def _quickstart_commands() -> list:
    section = README.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S)]


def test_quickstart_is_two_commands_and_ci_runs_the_second() -> None:
    commands = _quickstart_commands()
    assert len(commands) == 2 and all("\n" not in c for c in commands)
    assert commands[0].endswith("pipeline tune")
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert commands[1] in ci


def test_every_config_option_is_documented() -> None:
    for group in ("dataset", "model", "training", "tracking", "paths", "tuner", "search_space", "experiment", "debug"):
        row = next(line for line in README.splitlines() if line.startswith((f"| `{group}` |", f"| `{group}` (tune) |", f"| `{group}` (optional) |")))
        for option in sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml")):
            assert f"`{option}`" in row, (group, option)


def test_every_module_is_in_the_layout() -> None:
    layout = README.split("## Layout", 1)[1].split("\n## ", 1)[0]
    package = CONF_DIR.parent / "pipeline"
    for path in sorted(package.rglob("*.py")):
        if path.name == "__init__.py":
            continue
        if path.parent == package:
            assert f"{path.stem}.py" in layout, path.name
        else:  # a subpackage's modules are named in its own entry
            entry = re.split(r"\n {0,2}\S", layout.split(f"  {path.parent.name}/", 1)[1], maxsplit=1)[0]
            assert re.search(rf"\b{path.stem}\b", entry), f"{path.parent.name}/{path.name}"
