"""`pipeline tune`: a Keras Tuner search, one MLflow parent run with a child run per trial.

:func:`run` reads as its steps: validate, prepare, open (or resume) the search, search,
summarise the trials, and finalise (seed variance, the final model, its test and registration).
The same command after a crash continues the search; with ``tuner.workers=N`` or ``tuner.rank``
the search is spread over processes (``pipeline.tuning.distributed``).
"""

from __future__ import annotations

import copy
import sys
import warnings
from dataclasses import dataclass
from typing import Any, Dict, Optional

from omegaconf import DictConfig

from pipeline import evaluate, experiment, search_space, tracking, validate
from pipeline.baseline import beside
from pipeline.config import to_container
from pipeline.errors import PipelineError
from pipeline.train import hydra_overrides
from pipeline.tuning import folds
from pipeline.tuning.progress import number
from pipeline.tuning.project import Project, resolve_project, search_identity

# Keras Tuner (and with it TensorFlow) is imported by the steps that use it, once the settings and
# the data have passed: a bad data file is one line in seconds, not after TensorFlow's import.


@dataclass
class Search:
    """One search as it runs: its config, data, project state, tuner and parent run."""

    cfg: DictConfig
    config: Dict[str, Any]
    prepared: experiment.Prepared
    project: Project
    state: Dict[str, Any]
    #: The linear baseline on the same splits (``baseline.enabled``), fit before the run opened.
    baseline: Any = None
    tuner: Any = None
    parent_id: str = ""


@dataclass
class Summary:
    """What the trials came to: how many completed, and the best one."""

    completed: int
    best: Any


def run(cfg: DictConfig) -> float:
    """Search, record every trial, evaluate and register the best model; returns its score."""
    config = to_container(cfg)
    validate.check(cfg, models=False)  # every setting, before the store, the data or TensorFlow
    tracking.preflight(cfg.tracking)
    splits = validate.splits(cfg)  # a data error: one line, before TensorFlow is imported
    experiment.use_threads(cfg.training.threads)  # before TensorFlow runs anything
    hp = validate.check(cfg)  # and a model at each end of the space, before the store or project
    from pipeline.tuning import distributed

    experiment.seed_everything(cfg.seed, cfg.training.deterministic)
    prepared = experiment.prepare(cfg, splits)
    on_folds = folds.resolve(cfg, prepared)
    identity = search_identity(cfg, prepared.splits.fingerprint()["all"], on_folds)
    role = distributed.role(cfg)
    fitted = None if role == "worker" else experiment.fit_baseline(cfg, prepared)  # its C is the teacher's
    if on_folds == 1:  # the trials' teacher (distillation), before any run: one that cannot be fit is a one-line error
        prepared.teacher(cfg.training)
    if role != "worker" and cfg.tuner.final.refit:  # and the refits' (tuner.final.distill, or the trials' when null)
        from pipeline.tuning.final import refit_training

        own = cfg.tuner.final.distill.alpha is not None
        prepared.teacher(refit_training(cfg), off="tuner.final.distill.alpha=null" if own else None)
    if role == "worker":
        return distributed.work(cfg, prepared, identity, hp)

    project = resolve_project(cfg, identity)
    search = Search(cfg, config, prepared, project, project.state(), fitted)
    resumed = bool(search.state.get("parent_run_id")) and tracking.run_exists(cfg.tracking, search.state["parent_run_id"])
    with _parent_run(search, resumed) as parent:
        search.parent_id = parent.info.run_id
        _open(search, hp, resumed)
        if not ended(search.project.state(), search.config, search.parent_id):  # else its trials are all run
            _search(search, role)
        summary = _summarise(search)
        key = _finish_key(search, summary)
        finished = _finished_before(search, key)
        if finished is not None:  # the same command again: the final model as recorded, not trained or logged again
            registered = _registered_before(search, finished, summary.best)
            if registered is not None:
                metrics, final_model = finished["metrics"], finished["made"]
                print("note: this search finished before with these settings: its final model is the one recorded "
                      "(tuner.overwrite=true runs it again)", file=sys.stderr, flush=True)
        if finished is None or registered is None:
            _seed_variance(search)
            metrics, final_model, model_uri, registered = _finalise(search, summary.best, key)
            search.project.write_state(finished={
                "as": key, "searched": settings_key(search.config, also=("tuner.final",)), "parent_run_id": search.parent_id, "made": final_model,
                "metrics": {k: float(v) for k, v in metrics.items()},
                "model": model_uri, "promote": str(cfg.tuner.promote)})
        experiment_id = parent.info.experiment_id

    best = summary.best
    from pipeline.tuning.hypermodel import searched_values

    print(
        f"search {search.parent_id} ({cfg.dataset.name}, {cfg.tuner.name}): {summary.completed} trials, best {cfg.tuner.objective}="
        f"{best.score:.4f} {searched_values(best)}; final model {final_model}: test_accuracy={evaluate.with_interval(metrics)}"
        f"{beside(search.baseline)}{registered} | "
        f"UI: {tracking.ui_hint(cfg.tracking, experiment_id, search.parent_id)}",
        flush=True,
    )
    return float(best.score)


def _parent_run(search: Search, resumed: bool) -> Any:
    """The search's parent run: a new one, or the one a resumed search had."""
    cfg = search.cfg
    tags = {
        **experiment.run_tags(cfg, search.config, search.prepared, "tune"),
        "tuner.project": search.project.name,
        "tuner.directory": str(search.project.path),
        "tuner.name": str(cfg.tuner.name),
    }
    # what tells searches apart first, short enough for the UI's column
    trials = cfg.tuner.get("max_trials", "")  # Hyperband has none: its budget is in epochs
    run_name = f"{cfg.dataset.name}-{cfg.tuner.name}{trials}-{cfg.model.name}-s{cfg.seed}"
    return tracking.tracked_run(cfg.tracking, run_name, tags, run_id=search.state["parent_run_id"] if resumed else None)


def _open(search: Search, hp: Any, resumed: bool) -> None:
    """Record the search's inputs (new) or reconcile its trial runs (resumed); build its tuner."""
    from pipeline.tuning import trials
    from pipeline.tuning.tuners import make_tuner

    cfg, state = search.cfg, search.state
    times = int(state.get("resumed", 0)) + int(resumed)
    # The parent run goes into the state first: a process killed from here on is resumed into
    # this run (not a second parent), and records the inputs it had not finished recording.
    record = not resumed or not state.get("inputs_recorded", True)
    # A search keeps the tie rule it started with (one started before tuner.ties existed: Keras
    # Tuner's order), so resuming it never makes another trial its best and refits that one.
    ties = str(state.get("ties", "first")) if resumed else str(cfg.tuner.ties)
    if ties != str(cfg.tuner.ties):
        print(f"note: this search ranks equal scores by tuner.ties={ties}, as it started; "
              f"tuner.ties={cfg.tuner.ties} applies to a new search (tuner.overwrite=true starts this one again)", file=sys.stderr, flush=True)
        cfg = copy.deepcopy(cfg)
        cfg.tuner.ties = ties
        search.cfg = cfg
    search.project.write_state(parent_run_id=search.parent_id, project_name=search.project.name, resumed=times,
                               inputs_recorded=not record, ties=ties)
    if record:
        experiment.record_inputs(search.config, hydra_overrides(), search.prepared, "tune")
        tracking.log_dict(search_space.describe(cfg.search_space), "search/search_space.yaml")
        search.project.write_state(inputs_recorded=True)
    experiment.record_baseline(search.baseline)
    search.tuner = make_tuner(cfg, search.prepared, search.project, search.parent_id, hp)
    if resumed:
        killed = tracking.reconcile_children(cfg.tracking, search.parent_id, trials.trial_statuses(search.tuner))
        tracking.set_tags({"resumed": str(times)})
        print(f"resuming search {search.project.path} (parent run {search.parent_id}; {len(killed)} interrupted trial run(s) marked KILLED)", flush=True)


def _search(search: Search, role: str) -> None:
    """Run the trials: in this process, or served to workers."""
    from pipeline.tuning import distributed

    if role == "chief" or search.cfg.tuner.workers > 0:
        distributed.serve(search.tuner, search.cfg, search.project, role, hydra_overrides())
    else:
        search.tuner.search(verbose=0)


def _summarise(search: Search) -> Summary:
    """The trials table, a plot of scores by value, and the best trial on the parent run."""
    from pipeline.tuning import trials
    from pipeline.tuning.hypermodel import searched_values

    cfg, tuner = search.cfg, search.tuner
    table = trials.trial_table(tuner)
    completed = table[table["status"] == "COMPLETED"] if not table.empty else table
    if completed.empty:
        raise PipelineError("no trial completed; see the FAILED trial runs' error tags")
    tracking.log_table(table, "search/trials.csv")
    names = [n for n in search_space.describe(cfg.search_space) if n in table.columns]
    tracking.log_figure(evaluate.plot_search_scores(table, names, cfg.tuner.objective), "plots/search_scores.png")
    best = tuner.oracle.get_best_trials(1)[0]
    best_values = searched_values(best)
    tracking.log_metrics({"best_score": float(best.score), "trials_completed": float(len(completed)), "trials_total": float(len(table))})
    tracking.set_tags({"best_trial_id": str(best.trial_id), **{f"best.{k}": str(v) for k, v in best_values.items()}})
    tracking.log_dict({"trial_id": best.trial_id, "score": best.score, "hyperparameters": best_values}, "search/best.json")
    return Summary(len(completed), best)


#: Settings that do not change a search's final model: how it is registered and promoted, what
#: its process prints, its threads and its retries. Another of these and the same final model is
#: reported (registered under another name, promoted by another rule), not made again.
NOT_THE_FINAL_MODEL = ("tuner.promote", "tuner.final.registered_model_name", "training.verbose", "training.threads",
                       "tracking.connect_timeout", "tracking.max_retries", "tracking.backoff_factor",
                       # how the trials were spread over processes, and how a project is started or named
                       "tuner.workers", "tuner.rank", "tuner.oracle_host", "tuner.oracle_port", "tuner.overwrite", "tuner.on_change")


def settings_key(config: Dict[str, Any], also: tuple = ()) -> str:
    """A digest of every setting but :data:`NOT_THE_FINAL_MODEL` (and ``also``): what a search's end depends on."""
    from pipeline import provenance

    config = copy.deepcopy(config)
    for path in (*NOT_THE_FINAL_MODEL, *also):
        *parents, leaf = path.split(".")
        node = config
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    return provenance.config_hash(config)


def _finish_key(search: Search, summary: Summary) -> str:
    """What a finished search's final model was made from: its :func:`settings_key`, the trials
    completed and the best of them. The same again means the same final model; another setting
    (another ``tuner.final.refit``, more trials) makes it again."""
    from pipeline import provenance

    return provenance.config_hash({"settings": settings_key(search.config), "completed": summary.completed,
                                   "best": str(summary.best.trial_id)})


def ended(state: Dict[str, Any], config: Dict[str, Any], parent_run_id: Optional[str] = None) -> bool:
    """Whether the search this project holds ran its trials to their end with these settings (the
    final step's, ``tuner.final``, aside: they change what is made after the trials) into
    ``parent_run_id``, when given: no trial is left to run, so no oracle is served and no worker started."""
    finished = state.get("finished")
    return (isinstance(finished, dict) and finished.get("searched") == settings_key(config, also=("tuner.final",))
            and (parent_run_id is None or finished.get("parent_run_id") == parent_run_id))


def _finished_before(search: Search, key: str) -> Any:
    """The recorded end of this search (test metrics, how its final model was made, its registered
    version) when it finished before as it stands now (``key``, :func:`_finish_key`), into the
    parent run it has now (one deleted since is replaced by a new one, which gets its own final
    model), else None."""
    finished = search.project.state().get("finished")
    if not isinstance(finished, dict) or finished.get("as") != key or finished.get("parent_run_id") != search.parent_id:
        return None
    return finished


def _registered_before(search: Search, finished: Dict[str, Any], best: Any) -> Optional[str]:
    """A finished search's registered version as it stands, for its last line: no alias moves (a
    later search's version may hold ``candidate`` or ``champion`` by now) unless ``tuner.promote``
    differs from the rule it was promoted by. With no version of its final model under the
    registered name (deleted since, or another name), the model the search logged is registered,
    as a new version would be; None when that model is gone too (the final model is made again)."""
    cfg = search.cfg
    name = cfg.tuner.final.registered_model_name
    if not name or not cfg.tracking.log_model:
        return ""
    uri = str(cfg.tracking.uri)
    tags = {"best_trial_id": str(best.trial_id), "final_key": str(finished["as"])}
    # a record from before its model was kept: the newest version this search registered for its best trial
    version = tracking.search_version(uri, name, search.parent_id, tags if "model" in finished else {"best_trial_id": tags["best_trial_id"]})
    if version is not None and finished.get("promote", str(cfg.tuner.promote)) == str(cfg.tuner.promote):
        return f"; registered {tracking.standing(uri, version)}"
    new = version is None
    if new:
        model = finished.get("model")
        if not model or not tracking.logged_model_exists(uri, model):
            print("note: this search finished before, but its registered version and the model it was made from are gone: "
                  "the final model is made again", file=sys.stderr, flush=True)
            return None
        # promotion pending until done: a process killed between the two leaves a version the same
        # command promotes, not one it reports without aliases
        search.project.write_state(finished={**finished, "promote": None})
        described = experiment.described_version(cfg, search.prepared, finished["metrics"], {**tags, "search_run_id": search.parent_id})
        tracking.register_model(model, name, described)
        print(f"note: registered as {tracking.registered_name(name)} from the model the search logged (no version of it there)",
              file=sys.stderr, flush=True)
    # a new version: candidate, and champion if it earns it; another rule for the same version:
    # champion by that rule, @candidate left where it is (a later search's version may hold it)
    said = _promote(search, tags, candidate=new or finished.get("promote") is None)
    search.project.write_state(finished={**finished, "promote": str(cfg.tuner.promote)})
    return said


def _seed_variance(search: Search) -> None:
    """``tuner.final.seed_variance``: the top configurations retrained per seed, and a warning when
    the best two are within seed noise."""
    from pipeline.tuning import final

    cfg = search.cfg
    if cfg.tuner.final.seed_variance.top_k <= 0:
        return
    variance = final.seed_variance(search.tuner, cfg, search.prepared, search.parent_id)
    objective = str(cfg.tuner.objective)
    tracking.log_table(variance, "search/seed_variance.csv")
    top = variance.iloc[0]
    tracking.log_metrics({"seed_variance.best_mean": float(top[f"{objective}_mean"]),
                          "seed_variance.best_std": float(top[f"{objective}_std"])})
    warning = final.seed_noise_warning(variance, objective)
    tracking.set_tags({"seed_variance.warning": warning or "none"})
    if warning:
        print(f"warning: {warning}", file=sys.stderr, flush=True)


def _finalise(search: Search, best: Any, key: str) -> Any:
    """The final model (the best configuration refit on train+validation, or the best trial's own
    model; either averaged over seeds), tested, logged and registered once per final model (``key``,
    :func:`_finish_key`, a version's ``final_key`` tag); returns its test metrics, how it was made,
    its logged model's URI, and what became of its registered version (for the last line)."""
    from pipeline.tuning import final

    cfg, prepared = search.cfg, search.prepared
    # Once per final model, also when a resumed search's process died just after registering (a
    # version is made with its tags); again when its version was deleted since.
    version_tags = {"best_trial_id": str(best.trial_id), "final_key": key}
    register = cfg.tuner.final.registered_model_name
    if register and tracking.registered_for(str(cfg.tracking.uri), register, search.parent_id, version_tags):
        register = None
    # a trial scored on folds has no model of its own: the refit is the only one
    on_folds = folds.resolve(cfg, prepared) > 1
    model = None
    if not on_folds:
        with warnings.catch_warnings():
            # the checkpoint holds Adam's slots; the rebuilt model's optimizer is fresh and unused here
            warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
            model = search.tuner.get_best_models(1)[0]
    made = "the best trial's model"
    if cfg.tuner.final.refit:
        single = None
        if model is not None:
            x_test, y_test = prepared.encoded["test"]
            single = float(model.evaluate(x_test, y_test, batch_size=256, verbose=0, return_dict=True)["accuracy"])
            tracking.log_metrics({"best_trial.test_accuracy": single})
        model, members, notes = final.refit(cfg, prepared, search.project, search.parent_id, best)
        epochs, averaged = int(members.iloc[0]["epochs"]), int(members["averaged"].sum())
        tracking.log_table(members, "search/refit.csv")
        tracking.log_metrics({"refit.epochs": float(epochs), "refit.members": float(averaged)})
        tracking.set_tags({"refit.trial_id": str(best.trial_id)})
        if len(members) > 1:  # one refit has no peers to be compared with
            # a member trained before a resume by a version that kept no record of it
            checked = "unknown (members trained before a resume, with no record kept)" if members["accuracy"].isna().any() else "none"
            tracking.set_tags({"refit.untrained": "; ".join(notes) or checked})
        for note in notes:
            print(f"warning: {note} (search/refit.csv)", file=sys.stderr, flush=True)
        # the trial as its lines number it, and its MLflow run's name
        made = (f"trial {number(best.trial_id)}'s configuration (run trial-{best.trial_id}) refit on train+val for {epochs} epoch(s)"
                + (f", averaged over {averaged} seeds" if averaged > 1 else "")
                + (f" (best trial alone: test_accuracy={single:.4f})" if single is not None else ""))
    elif cfg.tuner.final.ensemble.seeds:
        x_test, y_test = prepared.encoded["test"]
        single = model.evaluate(x_test, y_test, batch_size=256, verbose=0, return_dict=True)["accuracy"]
        model, members = final.ensemble(search.tuner, cfg, prepared, search.project, search.parent_id, best, model)
        tracking.log_table(members, "search/ensemble.csv")
        tracking.log_metrics({"ensemble.members": float(len(members) - 1), "ensemble.val_accuracy": float(members.iloc[-1]["val_accuracy"]),
                              "best_trial.test_accuracy": float(single)})
        made = f"an average of {len(members) - 1} models (best trial alone: test_accuracy={single:.4f})"
    version_tags["search_run_id"] = search.parent_id
    metrics, model_uri = experiment.record_evaluation(model, prepared, cfg, registered_model_name=register, version_tags=version_tags)
    return metrics, made, model_uri, _promote(search, version_tags)


def _promote(search: Search, version_tags: Dict[str, str], candidate: bool = True) -> str:
    """The alias ``candidate`` on this search's registered version of its final model (unless not
    ``candidate``), and ``champion`` if it earns it (also on a resumed search that had registered it
    before it died); what happened, for the last line."""
    cfg = search.cfg
    name = cfg.tuner.final.registered_model_name
    if not name or not cfg.tracking.log_model:
        return ""
    uri = str(cfg.tracking.uri)
    mine = {k: version_tags[k] for k in ("best_trial_id", "final_key")}
    version = tracking.search_version(uri, name, search.parent_id, mine)
    if version is None:
        return ""
    metric = "test_" + str(cfg.tuner.objective).removeprefix("val_")
    said = tracking.promote(uri, name, version, metric, str(cfg.tuner.direction) == "max", str(cfg.tuner.promote), candidate)
    tracking.set_tags({"registered_model": f"{tracking.registered_name(name)}/{version.version}"})
    return f"; registered {said}"
