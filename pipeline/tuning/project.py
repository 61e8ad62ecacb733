"""Where a search's state lives on disk, and whether a command may continue it.

A search's state is ``<tuner.directory>/<tuner.project_name>``: Keras Tuner's oracle and trials,
plus ``pipeline_search.json`` (this module's), which records what the search was started with
(search space, objective, data, ...), its MLflow parent run and how far its final model got.
Running the same command again continues the search; running it with a different search space,
objective or data is refused (``tuner.on_change=error``) or moved to a new project
(``new_project``).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict

from omegaconf import DictConfig, OmegaConf

from pipeline import provenance, search_space
from pipeline.diskfull import writing
from pipeline.errors import ConfigError
from pipeline.limits import tuner_location

STATE_FILE = "pipeline_search.json"


def _digest(value: Any) -> str:
    return provenance.config_hash(value)[:16]


def search_identity(cfg: DictConfig, data_fingerprint: str, folds: int = 1) -> Dict[str, str]:
    """What makes two searches the same search: reloading is only safe when all of it matches."""
    t = cfg.tuner
    return {
        # trials scored on folds and on the validation split alone are not comparable
        **({"folds": str(folds)} if folds > 1 else {}),
        "search space": _digest(search_space.describe(cfg.search_space)),
        "objective": _digest([t.objective, t.direction]),
        # what a tuner's schema lacks counts as null (as when every tuner had every field)
        "tuner": _digest([t.name, t.executions_per_trial, *(t.get(k) for k in ("num_initial_points", "max_epochs", "factor", "hyperband_iterations"))]),
        "data": data_fingerprint[:16],
        "model": _digest(OmegaConf.to_container(cfg.model, resolve=True)),
        # what a trial prints, and how many threads it runs on (as the machine it runs on: not part of it)
        "training": _digest({k: v for k, v in OmegaConf.to_container(cfg.training, resolve=True).items() if k not in ("verbose", "threads")}),
        "seed": str(cfg.seed),
    }


@dataclass
class Project:
    """Where a search's state lives and what it was started as."""

    directory: Path
    name: str
    identity: Dict[str, str]

    @property
    def path(self) -> Path:
        return self.directory / self.name

    def state(self) -> Dict[str, Any]:
        f = self.path / STATE_FILE
        return json.loads(f.read_text()) if f.is_file() else {}

    def write_state(self, **values: Any) -> None:
        """Atomically: write beside, then rename."""
        self.path.mkdir(parents=True, exist_ok=True)
        state = {**self.state(), "identity": self.identity, **values}
        tmp = self.path / f".{STATE_FILE}.{os.getpid()}"
        try:
            with writing(str(self.path / STATE_FILE)):
                tmp.write_text(json.dumps(state, indent=2, sort_keys=True))
        except BaseException:  # a full disk: the old state stays, and nothing beside it
            tmp.unlink(missing_ok=True)
            raise
        tmp.replace(self.path / STATE_FILE)


def resolve_project(cfg: DictConfig, identity: Dict[str, str]) -> Project:
    """The project this search continues or starts; never silently one made for another search."""
    t = cfg.tuner
    tuner_location(t)
    directory, name = Path(t.directory), str(t.project_name)
    project = Project(directory, name, identity)
    if t.overwrite:
        shutil.rmtree(project.path, ignore_errors=True)
        return project
    if not project.path.exists() or not any(project.path.iterdir()):
        return project
    old = project.state().get("identity")
    # a key only the old search has (its folds: none is written for one scored on the validation
    # split) differs too: a fold-scored project reloaded as one without folds has no trial models
    only_old = [k for k in ("folds",) if k not in identity and old and k in old]
    changed = [k for k in [*identity, *only_old] if not old or old.get(k) != identity.get(k)]
    if not changed:
        return project
    if t.on_change == "new_project":
        return Project(directory, f"{t.project_name}-{_digest(identity)[:8]}", identity)
    what = f"its {', '.join(changed)} differ{'s' if len(changed) == 1 else ''}" if old else "of an unknown origin"
    raise ConfigError(
        f"tuner project {project.path} holds another search ({what}); "
        f"rerun with tuner.overwrite=true to start it again, or tuner.on_change=new_project"
    )
