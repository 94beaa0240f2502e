"""Fold every accepted spelling of ``ame.yml`` into the one shape :mod:`ame.spec.model` reads.

Accepted on top of the canonical dialect (docs/tasks.md):

* the older README dialect: ``projectname``, tasks and pipelines as mappings keyed by name,
  ``runcommand``, ``env: {envkey, value}``, ``secrets: {name, envkey}``, ``gpus``, ``vram``,
  ``recurring_tasks: {name: {taskref, schedule}}``, pipeline steps with ``taskname``;
* what the first implementation accepted: ``name:`` as the project name, ``env: [{key, val}]``,
  ``artifactCfg``, ``secrets: [{ame: {key, injectAs}}]``, ``dataSets: ["project.name"]``,
  ``taskRef: {name}``;
* shorthands: ``fromTemplate: project.template``, ``taskRef: task``, ``taskref``,
  ``executor: !mlflow`` with no fields, ``environment: {NAME: value}``.

The normaliser never mutates its input (aliases share nodes) and copies source positions
onto everything it builds, so later errors still point into the user's file. It reports
only what needs knowledge of the dialects (conflicting spellings, names, tags); field
types are left to the models.
"""

from __future__ import annotations

from typing import Any

from ame.domain.executors import EXECUTOR_KINDS
from ame.spec.errors import Problem
from ame.spec.suggestions import did_you_mean
from ame.spec.yaml_tree import LocDict, LocList, Mark, mark_of

_PROJECT_NAME_KEYS = ("project", "name", "projectname", "projectName", "projectid")
# Old spelling -> canonical key, per kind of mapping.
_TASK_RENAMES = {
    "taskref": "taskRef",
    "task_ref": "taskRef",
    "taskname": "name",
    "artifactCfg": "artifacts",
    "env": "environment",
    "data_sets": "dataSets",
    "from_template": "fromTemplate",
}
_RESOURCE_RENAMES = {"gpus": "nvidia.com/gpu", "ephemeral-storage": "storage"}
_ENV_RENAMES = {"envkey": "key", "name": "key", "value": "val"}
_SECRET_RENAMES = {"envkey": "injectAs", "name": "key", "secretKey": "key", "vaultName": "vault"}
_SECRET_KINDS = ("ame", "vault")


def normalise_project(root: Any, filename: str) -> tuple[LocDict, list[Problem]]:
    """Return the canonical tree for ``root`` and the problems found on the way."""
    normaliser = _Normaliser(filename)
    return normaliser.project(root), normaliser.problems


class _Normaliser:
    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.problems: list[Problem] = []

    def problem(self, mark: Mark, message: str) -> None:
        self.problems.append(Problem(self.filename, mark[0], mark[1], message))

    # -- project -------------------------------------------------------------------------

    def project(self, root: Any) -> LocDict:
        if root is None:
            self.problem((1, 1), "the file is empty; an AME file lists its tasks under 'tasks:'")
            return LocDict((1, 1))
        if not isinstance(root, LocDict):
            self.problem(
                mark_of(root, (1, 1)),
                "an AME file is a mapping of keys such as 'project:' and 'tasks:', not a list or a value",
            )
            return LocDict(mark_of(root, (1, 1)))
        out = LocDict(root.mark, root.tag)
        out.schema = root.schema
        tasks = LocDict(root.value_mark("tasks"))
        for key, value in root.items():
            key_mark, value_mark = root.key_mark(key), root.value_mark(key)
            if key in _PROJECT_NAME_KEYS:
                self._project_name(out, key, value, key_mark, value_mark)
            elif key == "tasks":
                self._named_entries(value, value_mark, "task", tasks, self.task)
                out.put("tasks", tasks, key_mark, value_mark)
            elif key == "templates":
                templates = LocDict(value_mark)
                self._named_entries(value, value_mark, "template", templates, self.task)
                out.put("templates", templates, key_mark, value_mark)
            elif key == "recurring_tasks":
                self._recurring_tasks(value, value_mark, tasks)
                if "tasks" not in out:
                    out.put("tasks", tasks, key_mark, value_mark)
            elif key == "models":
                out.put(key, self._each(value, self.model), key_mark, value_mark)
            elif key in ("dataSets", "data_sets"):
                out.put("dataSets", self._each(value, self.data_set), key_mark, value_mark)
            else:
                out.put(key, value, key_mark, value_mark)
        return out

    def _project_name(self, out: LocDict, key: str, value: Any, key_mark: Mark, value_mark: Mark) -> None:
        if "name" in out:
            if out["name"] != value:
                line, column = out.key_mark("name")
                self.problem(
                    key_mark,
                    f"the project name is given twice ('{key}: {value}' and line {line}, column {column}); "
                    "keep one, preferably 'project:'",
                )
            return
        out.put("name", value, key_mark, value_mark)

    def _named_entries(self, value: Any, mark: Mark, what: str, into: LocDict, normalise: Any) -> None:
        """Collect tasks or templates, written as a list (current) or a mapping (old README)."""
        if value is None:
            return
        if isinstance(value, LocDict):
            entries = [
                (self._with_name(body, key, value.key_mark(key)), value.key_mark(key)) for key, body in value.items()
            ]
        elif isinstance(value, LocList):
            entries = list(zip(value, value.item_marks, strict=True))
        else:
            self.problem(mark, f"'{what}s' is a list of {what}s, each starting with '- name: ...'")
            return
        for index, (entry, entry_mark) in enumerate(entries):
            if not isinstance(entry, LocDict):
                self.problem(entry_mark, f"each {what} is a mapping with at least 'name:'")
                continue
            name = entry.get("name", entry.get("taskname"))
            if name is None:
                self.problem(entry_mark, f"{what} #{index + 1} has no name; add 'name: ...'")
                continue
            if not isinstance(name, str):
                self.problem(entry.value_mark("name"), f"a {what} name is text, e.g. name: train_model")
                continue
            if name in into:
                line, column = into.value_mark(name)
                self.problem(
                    entry.value_mark("name") if "name" in entry else entry_mark,
                    f"duplicate {what} name '{name}' (first defined at line {line}, column {column}); "
                    f"{what} names must be unique",
                )
                continue
            into.put(name, normalise(entry), entry_mark, entry_mark)

    def _with_name(self, body: Any, name: str, mark: Mark) -> Any:
        if body is None:
            body = LocDict(mark)
        if not isinstance(body, LocDict):
            return body
        if "name" in body and body["name"] != name:
            self.problem(
                body.key_mark("name"),
                f"'{name}' is also given the name '{body['name']}'; in the mapping form the key is the name",
            )
        copy = _copy(body)
        copy.put("name", name, mark, mark)
        return copy

    def _recurring_tasks(self, value: Any, mark: Mark, tasks: LocDict) -> None:
        if value is None:
            return
        if not isinstance(value, LocDict):
            self.problem(mark, "'recurring_tasks' maps a name to {taskref: ..., schedule: ...}")
            return
        for name, body in value.items():
            body_mark = value.value_mark(name)
            if not isinstance(body, LocDict):
                self.problem(body_mark, f"recurring task '{name}' needs 'taskref:' and 'schedule:'")
                continue
            task = LocDict(body.mark)
            task.put("name", name, value.key_mark(name), value.key_mark(name))
            triggers = LocDict(body.mark)
            for key, item in body.items():
                if key == "schedule":
                    triggers.put("schedule", item, body.key_mark(key), body.value_mark(key))
                else:
                    task.put(key, item, body.key_mark(key), body.value_mark(key))
            task.put("triggers", triggers, body.mark, body.mark)
            if name in tasks:
                line, column = tasks.value_mark(name)
                self.problem(
                    value.key_mark(name),
                    f"duplicate task name '{name}' (first defined at line {line}, column {column})",
                )
                continue
            tasks.put(name, self.task(task), value.key_mark(name), value.key_mark(name))

    # -- tasks -----------------------------------------------------------------------------

    def task(self, raw: Any) -> Any:
        if not isinstance(raw, LocDict):
            return raw
        out = LocDict(raw.mark, raw.tag)
        for key, value in raw.items():
            canonical = _TASK_RENAMES.get(key, key)
            if canonical == "runcommand":
                canonical, value = "executor", _custom_executor(raw, value)
            if canonical in out:
                self.problem(
                    raw.key_mark(key),
                    f"'{key}' repeats '{_written_as(raw, canonical, key)}'; give it once",
                )
                continue
            out.put(
                canonical,
                self._task_field(canonical, value, raw.value_mark(key)),
                raw.key_mark(key),
                raw.value_mark(key),
            )
        return out

    def _task_field(self, key: str, value: Any, mark: Mark) -> Any:
        if key == "executor":
            return self.executor(value, mark)
        if key == "resources":
            return self._renamed(value, _RESOURCE_RENAMES)
        if key == "environment":
            return self.environment(value)
        if key == "secrets":
            return self.secrets(value)
        if key == "dataSets":
            return self._each(value, self.data_set_ref)
        if key == "fromTemplate":
            return _reference(value, mark, split_project=True)
        if key == "taskRef":
            return _reference(value, mark, split_project=False)
        if key == "pipeline":
            return self.pipeline(value, mark)
        if key == "triggers" and isinstance(value, str):
            # `triggers: "0 12 * * *"`: the only trigger there is, written directly.
            triggers = LocDict(mark)
            triggers.put("schedule", value, mark, mark)
            return triggers
        return value

    def executor(self, value: Any, mark: Mark) -> Any:
        """The executor as ``{kind, ...fields}``; ``None`` (after a problem) when unusable.

        A task whose executor was reported here is not reported again as "has no executor".
        """
        kinds = ", ".join(f"!{kind}" for kind in EXECUTOR_KINDS)
        if not isinstance(value, LocDict):
            if isinstance(value, str) and value.strip().lower() in EXECUTOR_KINDS:
                written_kind = value.strip().lower()
                self.problem(
                    mark,
                    f"write the executor as a YAML tag followed by its fields, e.g.\n"
                    f"    executor:\n      !{written_kind}\n      command: python train.py",
                )
            elif value is None:
                self.problem(mark, f"executor is empty; start it with one of {kinds}")
            else:
                self.problem(mark, f"the executor is a tagged mapping, one of {kinds}, followed by its fields")
            return None
        out = _copy(value)
        out.tag = None
        if value.tag is not None:
            tag = value.tag.lstrip("!")
            kind = _match_kind(tag, EXECUTOR_KINDS)
            if kind is None:
                self.problem(
                    value.mark,
                    f"unknown executor '!{tag}'{did_you_mean(tag, EXECUTOR_KINDS, prefix='!')} (executors are {kinds})",
                )
                return None
            out.put("kind", kind, value.mark, value.mark)
            return out
        if "kind" in value or "type" in value:
            written = "kind" if "kind" in value else "type"
            kind_value = value[written]
            out.pop(written, None)
            kind = _match_kind(kind_value, EXECUTOR_KINDS) if isinstance(kind_value, str) else None
            out.put(
                "kind",
                kind if kind is not None else kind_value,
                value.key_mark(written),
                value.value_mark(written),
            )
            return out
        if len(value) == 1:
            ((only, body),) = value.items()
            kind = _match_kind(only, EXECUTOR_KINDS)
            if kind is not None and (body is None or isinstance(body, LocDict)):
                # `executor: {poetry: {...}}`, the JSON-friendly spelling of a tag.
                inner = _copy(body) if isinstance(body, LocDict) else LocDict(value.value_mark(only))
                inner.put("kind", kind, value.key_mark(only), value.key_mark(only))
                return inner
        self.problem(
            value.mark,
            f"the executor needs a tag saying how to run the task, one of {kinds}, e.g.\n"
            '    executor:\n      !poetry\n      pythonVersion: "3.11"\n      command: python train.py',
        )
        return None

    def environment(self, value: Any) -> Any:
        if isinstance(value, LocDict):
            if set(value) <= {"envkey", "value", "key", "val", "name"}:
                # Old README: a single `env: {envkey, value}`.
                single = LocList(value.mark)
                single.push(self._renamed(value, _ENV_RENAMES), value.mark)
                return single
            # `environment: {NAME: value}`: the natural mapping form.
            listed = LocList(value.mark)
            for key, item in value.items():
                entry = LocDict(value.key_mark(key))
                entry.put("key", key, value.key_mark(key), value.key_mark(key))
                entry.put("val", item, value.value_mark(key), value.value_mark(key))
                listed.push(entry, value.key_mark(key))
            return listed
        return self._each(value, lambda item, _mark: self._renamed(item, _ENV_RENAMES))

    def secrets(self, value: Any) -> Any:
        if isinstance(value, LocDict):
            single = LocList(value.mark)
            single.push(self.secret(value, value.mark), value.mark)
            return single
        return self._each(value, self.secret)

    def secret(self, value: Any, mark: Mark) -> Any:
        if not isinstance(value, LocDict):
            return value
        if value.tag is not None:
            tag = value.tag.lstrip("!")
            kind = _match_kind(tag, _SECRET_KINDS)
            if kind is None:
                self.problem(
                    value.mark,
                    f"unknown secret kind '!{tag}'{did_you_mean(tag, _SECRET_KINDS, prefix='!')} "
                    "(secrets are !ame for AME's secret store or !vault for HashiCorp Vault)",
                )
                return None
            out = self._renamed(value, _SECRET_RENAMES)
            out.tag = None
            out.put("kind", kind, value.mark, value.mark)
            return out
        if len(value) == 1 and next(iter(value)) in _SECRET_KINDS:
            ((kind, body),) = value.items()
            if isinstance(body, LocDict):
                out = self._renamed(body, _SECRET_RENAMES)
                out.put("kind", kind, value.key_mark(kind), value.key_mark(kind))
                return out
        no_envkey = isinstance(value, LocDict) and "name" in value and not {"envkey", "injectAs"} & set(value)
        if no_envkey:
            # The old README's form (`{name, envkey}`) without its envkey: said in its own words.
            self.problem(
                value.mark,
                f"secret {value['name']!r} needs 'envkey' (or 'injectAs'): "
                "the environment variable its value is injected as",
            )
        out = self._renamed(value, _SECRET_RENAMES)
        if no_envkey:
            # Reported above; a stand-in keeps the same mistake from being reported twice.
            out.put("injectAs", "AME_MISSING_ENVKEY", value.mark, value.mark)
        if "kind" not in out:
            # No tag: a `vault:` field can only mean a Vault secret; anything else is AME's.
            kind = "vault" if "vault" in out else "ame"
            out.put("kind", kind, value.mark, value.mark)
        return out

    def data_set_ref(self, value: Any, mark: Mark) -> Any:
        if isinstance(value, str):
            # First implementation: "name" or "project.name".
            project, _, name = value.rpartition(".")
            ref = LocDict(mark)
            ref.put("name", name, mark, mark)
            if project:
                ref.put("project", project, mark, mark)
            return ref
        if isinstance(value, LocDict) and set(value) == {"ref"} and isinstance(value["ref"], LocDict):
            return value["ref"]
        return value

    def pipeline(self, value: Any, mark: Mark) -> Any:
        stages = LocList(mark)
        if isinstance(value, LocDict):
            # Old README: steps keyed by name, run in file order.
            for name, body in value.items():
                if body is not None and not isinstance(body, LocDict):
                    self.problem(value.value_mark(name), f"pipeline step '{name}' needs its fields (runcommand, ...)")
                    continue
                step = self._with_name(body, name, value.key_mark(name))
                stages.push(self._stage([step], [value.key_mark(name)], mark), value.key_mark(name))
            return stages
        if not isinstance(value, LocList):
            return value
        for item, item_mark in zip(value, value.item_marks, strict=True):
            if isinstance(item, LocList):
                if not item:
                    self.problem(item_mark, "a parallel group needs at least one task")
                    continue
                nested = [inner for inner in item if isinstance(inner, LocList)]
                if nested:
                    self.problem(
                        item.item_mark(item.index(nested[0])),
                        "a parallel group lists tasks side by side; it cannot contain another list",
                    )
                    continue
                group = self._stage(list(item), item.item_marks, item_mark)
                group.synthetic = False
                stages.push(group, item_mark)
            else:
                stages.push(self._stage([item], [item_mark], item_mark), item_mark)
        return stages

    def _stage(self, steps: list[Any], marks: list[Mark], mark: Mark) -> LocList:
        stage = LocList(mark)
        stage.synthetic = True
        for step, step_mark in zip(steps, marks, strict=True):
            if isinstance(step, str):
                # `- preprocessing`: a bare name is a reference to that task.
                ref = LocDict(step_mark)
                ref.put("taskRef", _reference(step, step_mark, split_project=False), step_mark, step_mark)
                step = ref
            normalised = self.task(step)
            if isinstance(normalised, LocDict) and "name" not in normalised and "taskRef" not in normalised:
                self.problem(step_mark, "a pipeline step needs a name, or a taskRef to one of the project's tasks")
            stage.push(normalised, step_mark)
        return stage

    # -- models and data sets -------------------------------------------------------------

    def model(self, value: Any, mark: Mark) -> Any:
        if not isinstance(value, LocDict):
            return value
        out = _copy(value)
        training = value.get("training")
        if isinstance(training, LocDict) and "task" in training:
            new_training = _copy(training)
            new_training["task"] = self.task(training["task"])
            out["training"] = new_training
        if "validationTask" in value:
            out["validationTask"] = self.task(value["validationTask"])
        return out

    def data_set(self, value: Any, mark: Mark) -> Any:
        if not isinstance(value, LocDict):
            return value
        out = _copy(value)
        for legacy in ("taskRef", "taskref"):
            if legacy not in value:
                continue
            if "task" in value:
                self.problem(value.key_mark(legacy), "give a data set either 'task:' or 'taskRef:', not both")
                continue
            ref_mark = value.value_mark(legacy)
            task = LocDict(ref_mark)
            task.put("taskRef", _reference(value[legacy], ref_mark, split_project=False), ref_mark, ref_mark)
            del out[legacy]
            out.put("task", task, value.key_mark(legacy), ref_mark)
        if "task" in out:
            out["task"] = self.task(out["task"])
        return out

    # -- helpers -------------------------------------------------------------------------

    def _each(self, value: Any, normalise: Any) -> Any:
        if not isinstance(value, LocList):
            return value
        out = LocList(value.mark, value.tag)
        for item, mark in zip(value, value.item_marks, strict=True):
            out.push(normalise(item, mark), mark)
        return out

    def _renamed(self, value: Any, renames: dict[str, str]) -> Any:
        if not isinstance(value, LocDict):
            return value
        out = LocDict(value.mark, value.tag)
        for key, item in value.items():
            canonical = renames.get(key, key)
            if canonical in out:
                self.problem(
                    value.key_mark(key),
                    f"'{key}' repeats '{_written_as(value, canonical, key)}'; give it once",
                )
                continue
            out.put(canonical, item, value.key_mark(key), value.value_mark(key))
        return out


def _match_kind(written: str, kinds: tuple[str, ...]) -> str | None:
    """Tags are matched ignoring case: `!pipEnv` (first implementation) and `!pipenv` (docs)."""
    lowered = written.lower()
    return next((kind for kind in kinds if kind == lowered), None)


def _custom_executor(task: LocDict, command: Any) -> LocDict:
    """Old README `runcommand:`: a command run as is, i.e. the custom executor."""
    mark = task.value_mark("runcommand")
    executor = LocDict(mark)
    executor.put("kind", "custom", mark, mark)
    executor.put("command", command, mark, mark)
    return executor


def _reference(value: Any, mark: Mark, *, split_project: bool) -> Any:
    """`fromTemplate: shared.gpu` / `taskRef: train` -> {name, project}."""
    if isinstance(value, LocDict):
        return value
    if not isinstance(value, str):
        return value
    ref = LocDict(mark)
    project, dot, name = value.partition(".")
    if split_project and dot:
        ref.put("project", project, mark, mark)
        ref.put("name", name, mark, mark)
    else:
        ref.put("name", value, mark, mark)
    return ref


def _written_as(source: LocDict, canonical: str, other: str) -> str:
    return next(
        (key for key in source if key != other and (key == canonical or _TASK_RENAMES.get(key) == canonical)),
        canonical,
    )


def _copy(value: LocDict) -> LocDict:
    out = LocDict(value.mark, value.tag)
    out.synthetic = value.synthetic
    for key, item in value.items():
        out.put(key, item, value.key_mark(key), value.value_mark(key))
    return out
