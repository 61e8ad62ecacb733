"""The MLflow Model Registry: which version of a registered model a search made, which is newest,
and which one is served (the ``champion`` alias, moved only to a better model).

Owns every registry query; registering itself is :func:`pipeline.tracking.models.register_model`,
of a model already logged (as it is logged, :func:`pipeline.tracking.models.log_text_model`, or a
finished search's again), so that a version always has its files, and its tags from the start. A
model's name is the config's, scrubbed (:func:`registered_name`): every function here that takes
one from the config scrubs it, so all of them name the same registered model.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import mlflow
from mlflow.exceptions import MlflowException

from pipeline.errors import TrackingError, first_line
from pipeline.redact import redact, scrub


def registered_name(name: str) -> str:
    """The name a model is registered under: the config's, its secrets written ``***``."""
    return scrub(str(name))


def registered_for(uri: str, name: str, run_id: str, tags: Dict[str, str]) -> bool:
    """Whether a version of ``name`` from ``run_id`` with these tags is registered already (a
    version is made with its tags, :func:`pipeline.tracking.models.register_model`)."""
    try:
        return search_version(uri, name, run_id, tags) is not None
    except MlflowException:
        return False


def latest_version(uri: str, name: str) -> str:
    """The newest version of a registered model, as a ``models:/`` URI; a one-line error when none."""
    try:
        versions = mlflow.MlflowClient(uri).search_model_versions(f"name='{name}'")
    except Exception as e:  # noqa: BLE001 - an unusable store
        raise TrackingError(f"cannot read the MLflow model registry at {redact(uri)}: {first_line(e)}") from None
    if not versions:
        raise TrackingError(f"no registered model {name!r} with a version in {redact(uri)} (nor a run id)")
    latest = max(versions, key=lambda v: int(v.version))
    return f"models:/{name}/{latest.version}"


#: The alias every new version of a search gets, and the one ``pipeline predict NAME`` serves.
CANDIDATE, CHAMPION = "candidate", "champion"


def search_version(uri: str, name: str, run_id: str, tags: Dict[str, str]) -> Optional[Any]:
    """The version of ``name`` that this search (its parent ``run_id``) registered, with these tags."""
    name = registered_name(name)
    versions = mlflow.MlflowClient(uri).search_model_versions(f"name='{name}' and run_id='{run_id}'")
    mine = [v for v in versions if all(v.tags.get(k) == str(val) for k, val in tags.items())]
    return max(mine, key=lambda v: int(v.version)) if mine else None


def standing(uri: str, version: Any) -> str:
    """A version and its aliases as they are now, for a line that moves none of them (read again:
    a version from a search of versions carries no aliases)."""
    version = mlflow.MlflowClient(uri).get_model_version(version.name, str(version.version))
    aliases = sorted(version.aliases or [])
    return f"{version.name} v{version.version}" + (" is " + " and ".join(f"@{a}" for a in aliases) if aliases else " (no alias)")


def _score(client: Any, version: Any, metric: str) -> Tuple[Optional[float], str]:
    """A version's test score and data fingerprint: its tags, else its run's (older versions)."""
    tags = dict(version.tags)
    if metric not in tags or "data_fingerprint" not in tags:
        try:
            run = client.get_run(version.run_id)
            tags = {**{k: str(v) for k, v in run.data.metrics.items()}, **run.data.tags, **tags}
        except MlflowException:
            pass
    value = tags.get(metric)
    return (float(value) if value is not None else None), str(tags.get("data_fingerprint", ""))


def promote(uri: str, name: str, version: Any, metric: str, higher_is_better: bool, policy: str, candidate: bool = True) -> str:
    """Alias a search's new version ``candidate`` (unless not ``candidate``: a version promoted
    before, by another rule), and move ``champion`` to it when ``policy`` is ``always``, or ``auto``
    and its ``metric`` beats the champion's on the same data fingerprint (no champion yet: it
    becomes one). Returns what happened, for the search's last line."""
    name = registered_name(name)
    client = mlflow.MlflowClient(uri)
    if candidate:
        client.set_registered_model_alias(name, CANDIDATE, str(version.version))
    try:
        champion = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        champion = None
    mine, fingerprint = _score(client, version, metric)
    here = f"{name} v{version.version}"
    held = candidate or CANDIDATE in (client.get_model_version(name, str(version.version)).aliases or [])
    as_candidate = f"{here} is @{CANDIDATE}" if held else here
    if champion is not None and str(champion.version) == str(version.version):
        return f"{here} is @{CHAMPION}"
    if policy == "never":
        return f"{as_candidate} (tuner.promote=never)"
    if champion is None or policy == "always":
        client.set_registered_model_alias(name, CHAMPION, str(version.version))
        return f"{here} is now @{CHAMPION}" + (" (tuner.promote=always)" if champion is not None else "")
    theirs, their_fingerprint = _score(client, champion, metric)
    was = f"@{CHAMPION} stays v{champion.version}"
    if their_fingerprint != fingerprint:
        return f"{as_candidate}; {was} (tested on other data; tuner.promote=always moves it)"
    if mine is None or theirs is None:
        return f"{as_candidate}; {was} ({metric} missing on one of them)"
    better = mine > theirs if higher_is_better else mine < theirs
    if not better:
        return f"{as_candidate}; {was} ({metric} {mine:.4f}, not better than its {theirs:.4f})"
    client.set_registered_model_alias(name, CHAMPION, str(version.version))
    return f"{here} is now @{CHAMPION} ({metric} {mine:.4f} beats v{champion.version}'s {theirs:.4f})"


def served_version(uri: str, name: str) -> str:
    """What ``pipeline predict NAME`` serves: ``models:/NAME@champion``, else (a registry from before
    aliases, or every search with ``tuner.promote=never``) the newest version, said on stderr."""
    import sys

    try:
        mlflow.MlflowClient(uri).get_model_version_by_alias(name, CHAMPION)
        return f"models:/{name}@{CHAMPION}"
    except MlflowException:
        pass
    newest = latest_version(uri, name)
    print(f"note: {name} has no @{CHAMPION} alias; using its newest version ({newest})", file=sys.stderr, flush=True)
    return newest
