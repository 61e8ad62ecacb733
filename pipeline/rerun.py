"""`pipeline rerun RUN_ID`: the job a past run recorded, trained again and compared with it.

The config comes from the run's own record (``config/resolved_config.yaml``), not from
today's ``conf/``: a train run is rebuilt as it was; a search's trial is its search's config
with the trial's hyperparameters; a search's parent reruns its final model's refit (the
search's own seed), else its best trial. Before training,
the code version, the key package versions and the data fingerprint are compared with the
original's, and any difference stops the rerun unless ``--force``.
"""

from __future__ import annotations

import math
import re
import sys
from typing import Any, Dict, List, Optional, Tuple

import yaml
from omegaconf import DictConfig, OmegaConf

from pipeline import experiment, provenance, tracking
from pipeline.config import TrainConfig, compose_train, register_configs
from pipeline.search_space import ROOTS
from pipeline.errors import ConfigError, PipelineError, first_line
from pipeline.tuning.progress import named

#: Package versions that change numbers; a difference stops a rerun.
KEY_PACKAGES = ("tensorflow", "keras", "keras-tuner", "numpy", "scikit-learn")
#: Per-epoch losses closer than this count as reproduced.
TOLERANCE = 1e-6
#: Settings added after runs were recorded whose default has changed since: what a record without
#: them had (the behaviour before the setting existed), not today's default.
WHEN_ABSENT = {"model.pooling": "last", "dataset.split_punctuation": False, "training.fit_on": "train",
               "training.lr_schedule": "constant", "model.embedding_init": "random"}


class RerunError(PipelineError):
    """The rerun cannot reproduce its original as asked."""


def _child(uri: str, parent: tracking.RunRecord, condition: str) -> Optional[tracking.RunRecord]:
    found = tracking.search(
        uri, [parent.experiment_id],
        f"tags.mlflow.parentRunId = '{parent.run_id}' and {condition} and attributes.status = 'FINISHED'",
    )
    return found[0] if found else None


def _replaced_by(uri: str, parent: tracking.RunRecord, refit: tracking.RunRecord) -> Optional[str]:
    """The seed averaged into a search's final model in place of ``refit`` (its refit with the
    search's seed), or None: as the search's last final stage recorded it in ``search/refit.csv``
    (a resumed search may have averaged what an earlier process replaced); for a search logged
    without that table, the refit run tagged as replacing it."""
    seed = refit.tags.get("refit.seed")
    try:
        table = tracking.load_table(uri, parent.run_id, "search/refit.csv")
    except PipelineError:
        table = None
    if table is not None and {"seed", "averaged", "replaced_by"} <= set(table.columns):
        rows = table[table["seed"].astype(str) == str(seed)]
        if len(rows):
            row = rows.iloc[-1]
            averaged = str(row["averaged"]).strip().lower() == "true"
            return None if averaged or row.isna()["replaced_by"] else str(int(float(row["replaced_by"])))
    replaced = _child(uri, parent, f"tags.`refit.replaces` = '{seed}' and tags.`refit.trial_id` = '{refit.tags.get('refit.trial_id')}' "
                                   f"and tags.`refit.epochs` = '{refit.tags.get('refit.epochs')}'")
    return replaced.tags.get("refit.seed") if replaced else None


def _refit_source(uri: str, parent: tracking.RunRecord, refit: tracking.RunRecord) -> Tuple[tracking.RunRecord, tracking.RunRecord]:
    """(the trial whose values the refit used, the refit run) for a search's final model."""
    if refit.tags.get("refit.seed") != parent.params.get("seed"):
        raise RerunError(
            f"run {refit.run_id} is the refit with seed {refit.tags.get('refit.seed')}, an ensemble member; "
            f"rerun the search {parent.run_id} (its refit with the search's seed) instead"
        )
    trial = _child(uri, parent, f"tags.`tuner.trial_id` = '{refit.tags['refit.trial_id']}'")
    if trial is None:
        raise RerunError(f"search {parent.run_id}: the run of {named(refit.tags['refit.trial_id'])} is missing")
    return trial, refit


def _source(uri: str, run_id: str) -> Tuple[tracking.RunRecord, tracking.RunRecord, Optional[tracking.RunRecord], Optional[tracking.RunRecord]]:
    """(the run asked for, the run whose config and provenance to use, the trial to replay, the
    refit to replay: the trial's values trained on train+validation for the refit's epochs)."""
    asked = tracking.fetch_run(uri, run_id)
    command = asked.tags.get("pipeline.command")
    if command == "train":
        return asked, asked, None, None
    if "tuner.trial_id" in asked.tags and asked.parent_id:
        return asked, tracking.fetch_run(uri, asked.parent_id), asked, None
    if "refit.trial_id" in asked.tags and asked.parent_id:
        parent = tracking.fetch_run(uri, asked.parent_id)
        return (asked, parent, *_refit_source(uri, parent, asked))
    if command == "tune":
        best = asked.tags.get("best_trial_id")
        if best is None:
            raise RerunError(f"search {run_id} has no best trial yet (no trial completed); rerun a trial's run instead")
        if "refit.trial_id" in asked.tags:  # its final model was refit: that is what it reruns
            seed = asked.params.get("seed")
            refit = _child(uri, asked, f"tags.`refit.trial_id` = '{asked.tags['refit.trial_id']}' and tags.`refit.seed` = '{seed}'")
            if refit is None:
                raise RerunError(f"search {run_id}: the run of its final model's refit (seed {seed}) is missing")
            return (asked, asked, *_refit_source(uri, asked, refit))
        trial = _child(uri, asked, f"tags.`tuner.trial_id` = '{best}'")
        if trial is None:
            raise RerunError(f"search {run_id}: the run of its best trial, {named(best)}, is missing")
        return asked, asked, trial, None
    if "sweep.id" in asked.tags:  # a sweep's parent (pipeline.command "train -m"): its jobs are what ran
        raise RerunError(f"run {run_id} is a sweep's parent run; rerun one of its jobs (`pipeline compare {run_id}` lists them)")
    if command is not None:
        raise RerunError(f"run {run_id} was recorded by pipeline {command}, not by pipeline train or tune; there is nothing to rerun")
    raise RerunError(f"run {run_id} was not recorded by pipeline train or tune (no pipeline.command tag)")


def _value(text: str) -> Any:
    return yaml.safe_load(text)


def _searched_path(cfg: DictConfig, name: str) -> str:
    """A trial's ``hp.*`` param as a config path: ``model.units`` as it is; a bare ``units``
    (recorded before searched values were named by path) is the model or training field of
    that name."""
    if "." in name:
        return name
    return next((f"{root}.{name}" for root in ROOTS if name in cfg[root]), name)


def _replay_trial(cfg: DictConfig, trial: tracking.RunRecord, notes: List[str]) -> None:
    """Write a trial's recorded values into ``cfg``: a plain config update, path by path."""
    for key, raw in trial.params.items():
        if not key.startswith("hp."):
            continue
        name = key[len("hp."):]
        if name == "tuner/epochs":  # Hyperband's budget for this trial
            budget, horizon = int(_value(raw)), int(cfg.training.epochs)
            if budget < horizon and str(cfg.training.lr_schedule) == "cosine":
                notes.append(
                    f"{named(trial.tags.get('tuner.trial_id'))} trained {budget} epochs in a Hyperband round on a cosine "
                    f"schedule over training.epochs={horizon}; the rerun trains {budget} epochs on a schedule over its "
                    f"own {budget}, so its numbers will differ (training.lr_schedule=constant searches rerun exactly)"
                )
            cfg.training.epochs = budget
        elif name == "tuner/initial_epoch" and int(_value(raw)) > 0:
            notes.append(
                f"{named(trial.tags.get('tuner.trial_id'))} continued a Hyperband checkpoint from epoch "
                f"{_value(raw)}; the rerun trains from scratch, so its numbers will differ"
            )
        elif not name.startswith("tuner/"):
            path = _searched_path(cfg, name)
            try:
                OmegaConf.update(cfg, path, _value(raw), merge=False)
            except Exception as e:  # noqa: BLE001 - a record this version cannot replay
                raise RerunError(f"trial {trial.run_id}: cannot set {path}={raw}: {first_line(e)}") from None


def _has(cfg: DictConfig, key: str) -> bool:
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent) if parent else cfg
    return OmegaConf.is_dict(node) and leaf in list(node.keys())


def _apply_overrides(cfg: DictConfig, overrides: List[str]) -> DictConfig:
    """The user's overrides in Hydra's grammar on a recorded config: ``key=value``, ``+key=value``,
    ``~key`` and ``group=option`` (the option's file from today's ``conf/``)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    groups = [k for k in TrainConfig.__dataclass_fields__ if k != "seed"]
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception as e:  # noqa: BLE001 - Hydra's parse error, one line
        raise ConfigError(f"cannot parse overrides {' '.join(overrides)!r}: {first_line(e)}") from None
    for override in parsed:
        key, text = override.key_or_group, override.input_line
        try:
            if override.is_delete():
                if not _has(cfg, key):
                    raise ConfigError(f"{key} is not in the recorded config")
                parent, _, leaf = key.rpartition(".")
                del (OmegaConf.select(cfg, parent) if parent else cfg)[leaf]
            elif key in groups and not override.is_add():
                option = compose_train([f"{key}={override.value()}"])
                cfg[key] = option[key]  # typed like the recorded group's node
            elif override.is_add() and not override.is_force_add() and _has(cfg, key):
                raise ConfigError(f"{key} is already in the config; override it without +")
            else:
                if not override.is_add() and not _has(cfg, key):
                    raise ConfigError(f"{key} is not a setting of the recorded config")
                OmegaConf.update(cfg, key, override.value(), merge=True, force_add=override.is_force_add())
        except ConfigError as e:
            raise ConfigError(f"bad override {text!r}: {e}") from None
        except Exception as e:  # noqa: BLE001 - OmegaConf's and Hydra's validation errors, one line
            raise ConfigError(f"bad override {text!r}: {first_line(e)}") from None
    return cfg


def rebuild_config(
    config: Dict[str, Any], trial: Optional[tracking.RunRecord], overrides: List[str], refit: Optional[tracking.RunRecord] = None
) -> Tuple[DictConfig, List[str]]:
    """The train config of the original job, with a trial's values (trained on train+validation
    for the refit's epochs, when a refit is replayed) and the user's overrides.

    Returns it with notes on what cannot be exact (a Hyperband trial resumed from a checkpoint).
    """
    register_configs()
    notes: List[str] = []
    plain = {k: v for k, v in config.items() if k in TrainConfig.__dataclass_fields__}
    # A setting added since the run was recorded takes what the run had before the setting
    # existed: the value in WHEN_ABSENT where today's default has changed since, else today's
    # default (conf/).
    plain = OmegaConf.to_container(OmegaConf.create(plain))
    for key, value in WHEN_ABSENT.items():
        group, _, leaf = key.partition(".")
        if isinstance(plain.get(group), dict) and leaf not in plain[group]:
            plain[group][leaf] = value
    today = OmegaConf.to_container(compose_train([]), resolve=True)
    cfg = OmegaConf.merge(OmegaConf.structured(TrainConfig), today, plain)
    if trial is not None:
        _replay_trial(cfg, trial, notes)
        cfg.tracking.log_model = True
    if trial is not None and refit is None and _on_folds(trial):
        tagged = str(trial.tags.get("tuner.cv_folds", ""))
        count = int(trial.metrics.get("cv_folds") or (int(tagged) if tagged.isdigit() else 0))
        notes.append(
            f"{named(trial.tags.get('tuner.trial_id'))} was scored on {f'{count} folds' if count > 1 else 'folds'}; the rerun "
            "trains its values once on the training split, so its numbers will differ"
        )
    if trial is not None and refit is None and trial.tags.get("tuner.pruned"):
        notes.append(
            f"{named(trial.tags.get('tuner.trial_id'))} was {trial.tags['tuner.pruned']} (tuner.prune); the rerun "
            "trains every epoch, so its epochs after that go beyond the trial's record"
        )
    if refit is not None:
        cfg.training.fit_on = "train_val"
        cfg.training.epochs = int(refit.tags["refit.epochs"])
        if "refit.distill.alpha" in refit.tags:  # tuner.final.distill (a refit recorded before it: the trials' targets)
            alpha = refit.tags["refit.distill.alpha"]
            cfg.training.distill.alpha = None if alpha in ("null", "None") else float(alpha)  # "None": as refits recorded it at first
        cfg.training.early_stopping.enabled = False
    return _apply_overrides(cfg, overrides), notes


def _differences(original: Dict[str, str], prepared: experiment.Prepared) -> List[str]:
    now = {
        **provenance.git_state(),
        "code_digest": provenance.code_digest(),
        **{f"version.{k}": v for k, v in provenance.package_versions().items()},
        "data_fingerprint": prepared.splits.fingerprint()["all"],
    }
    # a run recorded before code_digest existed is compared on the rest; with the same digest the
    # code is the same, whatever git says (a wheel has no commit; a commit may change the README only)
    same_code = original.get("code_digest") == now["code_digest"]
    keys = [*([] if same_code else ["git_commit", "git_dirty"]), "code_digest", "data_fingerprint", *(f"version.{p}" for p in KEY_PACKAGES)]
    return [f"{k} {original[k]} -> {now[k]}" for k in keys if k in original and original[k] != now[k]]


def _compare_losses(uri: str, original_id: str, new_id: str) -> str:
    before = tracking.metric_history(uri, original_id, "loss")
    after = tracking.metric_history(uri, new_id, "loss")
    if not before:
        return "the original logged no per-epoch loss to compare"
    if len(before) != len(after):
        return f"per-epoch loss: {len(after)} epochs vs the original's {len(before)}"
    gap = max(abs(a - b) for a, b in zip(before, after))
    verdict = "reproduced" if gap <= TOLERANCE else "differs"
    return f"per-epoch loss {verdict}: largest difference {gap:.2e} over {len(after)} epochs"


def run(run_id: str, overrides: List[str], force: bool = False, tracking_uri: Optional[str] = None) -> str:
    """Rerun ``run_id``; returns the new run's id."""
    from pipeline import train

    store = _store(overrides, tracking_uri)
    tracking.preflight(store, create=False)  # reading a run creates no store
    uri = str(store.uri)
    asked, source, trial, refit = _source(uri, run_id)
    config = tracking.load_artifact(uri, source.run_id, "config/resolved_config.yaml")
    if not isinstance(config, dict):
        raise RerunError(f"run {source.run_id}: config/resolved_config.yaml is not a config")
    recorded = tracking.load_artifact(uri, source.run_id, "config/overrides.yaml") or {}
    cfg, notes = rebuild_config(config, trial, [o for o in overrides if not o.startswith("tracking.uri=")], refit)
    cfg.tracking.uri = uri
    shown = refit or trial or source
    replayed = shown.run_id
    cfg.tracking.run_name = f"rerun-{shown.name}"
    members = int(asked.metrics.get("refit.members", 1)) if refit is not None and asked is source else 1
    if members > 1:
        seed = refit.tags.get("refit.seed")
        replaced_by = _replaced_by(uri, asked, refit)
        notes.append(
            f"search {run_id}'s final model averaged {members} refits; this reruns the one with the search's "
            f"seed ({seed}), whose test accuracy is its own, not the average's"
            + (f" (it may not have trained, and seed {replaced_by} was averaged in its place)" if replaced_by else "")
        )
    if shown.status != "FINISHED":  # killed, failed, or still running (or its process died)
        notes.append(f"run {replayed} is {shown.status}, not FINISHED: its per-epoch loss and test accuracy, "
                     "if any, stop where it stopped; this rerun trains to the end")
    for note in notes:
        print(f"warning: {note}", file=sys.stderr, flush=True)

    def check(prepared: experiment.Prepared) -> Dict[str, str]:
        found = _differences(source.tags, prepared)
        if found and not force:
            raise RerunError(f"run {run_id} differs from now: {'; '.join(found)} (pass --force to rerun anyway)")
        for line in found:
            print(f"warning: differs from the original: {line}", file=sys.stderr, flush=True)
        return {"rerun_differences": "; ".join(found)} if found else {}

    tags = {"rerun_of": run_id, "rerun_of_run": replayed}
    new_id, metrics = train.train_and_record(cfg, extra_tags=tags, overrides=list(recorded.get("overrides", [])), check=check)
    original = tracking.fetch_run(uri, replayed)
    before = original.metrics.get("test_accuracy", asked.metrics.get("test_accuracy"))
    comparison = _compare_losses(uri, replayed, new_id)
    original_is = f"original, averaged over {members} refits" if members > 1 else "original"
    accuracy = f"test_accuracy {metrics['accuracy']:.4f}" + ("" if before is None or math.isnan(before) else f" ({original_is} {before:.4f})")
    print(f"rerun of {run_id}: {comparison}; {accuracy}", flush=True)
    return new_id


def _store(overrides: List[str], tracking_uri: Optional[str]) -> DictConfig:
    """The tracking settings of a plain `pipeline train` here: its store, ``tracking.*=`` from the
    overrides, or ``tracking_uri``."""
    store = compose_train([o for o in overrides if o.startswith(("tracking.", "paths."))]).tracking
    if tracking_uri:
        store.uri = tracking_uri
    return store


def main(argv: List[str]) -> int:
    """`pipeline rerun RUN_ID [--force] [overrides ...]`."""
    from pipeline.usage import argument_parser

    parser = argument_parser(
        "pipeline rerun",
        "Train again what run RUN_ID recorded (a train run; a search's trial or refit; a search's parent:\n"
        "its final model's refit, else its best trial), record a new run tagged rerun_of=RUN_ID, and say\n"
        "whether every epoch's loss matched.",
        "The git commit, dirty flag, data fingerprint and key package versions are compared first; a\n"
        "difference stops the rerun unless --force. Overrides are Hydra's grammar, applied to the recorded\n"
        "config: key=value, +key=value, ~key, group=option (e.g. training.deterministic=false model=bilstm);\n"
        "tracking.uri=URI reads and writes another store (default: mlruns/mlflow.db here).",
    )
    parser.add_argument("run_id", help="the run to train again")
    parser.add_argument("overrides", nargs="*", default=[], help="Hydra overrides on the recorded config")
    parser.add_argument("--force", action="store_true", help="rerun although code, packages or data differ")
    args = parser.parse_intermixed_args(argv)
    run(args.run_id, list(args.overrides), force=args.force)
    return 0


def _on_folds(trial: Any) -> bool:
    """Whether a trial's run was scored on folds: its ``cv_folds`` metric (logged as it ends), its
    ``tuner.cv_folds`` tag (as it starts), or a fold's curves (a run cut off before either)."""
    tagged = str(trial.tags.get("tuner.cv_folds", ""))
    return (trial.metrics.get("cv_folds", 1) > 1 or (tagged.isdigit() and int(tagged) > 1)
            or any(re.match(r"fold\d+\.", key) for key in trial.metrics))
