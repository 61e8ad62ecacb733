"""The registry a server can trust: `champion` moves only to a better model on the same data."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from pipeline.tracking import registry
from pipeline.tracking.models import resolve_model


@pytest.fixture
def registered(tmp_path: Path, store_uri: str):
    """A real SQLite registry; ``add(score, fingerprint)`` registers a version tagged as a search's."""
    (tmp_path / "mlruns").mkdir(exist_ok=True)
    client = MlflowClient(store_uri)
    client.create_registered_model("m")

    def add(score: float, fingerprint: str = "fp-a"):
        tags = {"test_accuracy": str(score), "data_fingerprint": fingerprint}
        return client.create_model_version("m", str(tmp_path), tags=tags)

    return client, add


def _aliases(client: MlflowClient) -> dict:
    return {alias: str(version) for alias, version in client.get_registered_model("m").aliases.items()}


@pytest.mark.parametrize("policy", ["auto", "always", "never"])
def test_the_first_version_becomes_champion_unless_never(registered, store_uri: str, policy: str) -> None:
    client, add = registered
    said = registry.promote(store_uri, "m", add(0.80), "test_accuracy", True, policy)
    expected = {"candidate": "1"} if policy == "never" else {"candidate": "1", "champion": "1"}
    assert _aliases(client) == expected, said


def test_champion_moves_only_on_a_better_score_on_the_same_data(registered, store_uri: str) -> None:
    client, add = registered
    registry.promote(store_uri, "m", add(0.80), "test_accuracy", True, "auto")
    worse = registry.promote(store_uri, "m", add(0.70), "test_accuracy", True, "auto")
    assert _aliases(client) == {"candidate": "2", "champion": "1"}
    assert "@champion stays v1" in worse and "0.7000" in worse and "0.8000" in worse
    tie = registry.promote(store_uri, "m", add(0.80), "test_accuracy", True, "auto")
    assert _aliases(client) == {"candidate": "3", "champion": "1"}, tie
    other_data = registry.promote(store_uri, "m", add(0.99, "fp-b"), "test_accuracy", True, "auto")
    assert _aliases(client) == {"candidate": "4", "champion": "1"} and "other data" in other_data
    better = registry.promote(store_uri, "m", add(0.85), "test_accuracy", True, "auto")
    assert _aliases(client) == {"candidate": "5", "champion": "5"} and "beats v1" in better
    # a loss: lower is better
    registry.promote(store_uri, "m", add(0.90), "test_accuracy", False, "auto")
    assert _aliases(client)["champion"] == "5"
    registry.promote(store_uri, "m", add(0.10), "test_accuracy", True, "always")
    assert _aliases(client) == {"candidate": "7", "champion": "7"}
    registry.promote(store_uri, "m", add(0.99), "test_accuracy", True, "never")
    assert _aliases(client) == {"candidate": "8", "champion": "7"}


def test_a_name_serves_its_champion_and_versions_and_aliases_are_named_as_mlflow_does(registered, store_uri: str, capsys) -> None:
    client, add = registered
    add(0.8)
    add(0.7)
    # a registry from before aliases: the newest version, said on stderr
    assert resolve_model(store_uri, "m") == "models:/m/2"
    assert "no @champion" in capsys.readouterr().err
    client.set_registered_model_alias("m", "champion", "1")
    assert resolve_model(store_uri, "m") == "models:/m@champion"
    assert resolve_model(store_uri, "m@candidate") == "models:/m@candidate"
    assert resolve_model(store_uri, "m/2") == "models:/m/2"
