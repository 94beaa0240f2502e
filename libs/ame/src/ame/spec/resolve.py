"""Apply templates, task references and pipeline defaults to get runnable tasks.

Merge rules (a task over its template, a referring task over the referenced one, a
pipeline step over its pipeline's settings) are the same everywhere:

* single values — ``executor``, ``timeout``, ``retries``, ``loop``, ``triggers``, ``pipeline`` —
  are *replaced* when the more specific side sets them (an executor is replaced whole:
  mixing ``!poetry`` fields into a ``!pip`` executor has no meaning);
* ``resources`` are merged per key (a task's ``memory`` replaces the template's
  ``memory``; the template's ``nvidia.com/gpu`` stays);
* ``environment`` is merged by ``key`` and ``secrets`` by ``injectAs`` (same variable ->
  the specific side wins, in the template's position; new ones are appended);
* ``artifacts.paths`` and ``dataSets`` are unions (template's first), and
  ``saveChangedFiles`` is replaced when set;
* ``name``, ``fromTemplate`` and ``taskRef`` are never inherited.

Two exceptions: a task reached through ``taskRef`` does not pass on its ``triggers`` (a
reference means "run that work", not "schedule it a second time"), and a pipeline task's
``timeout`` bounds the whole pipeline instead of being a default for its steps.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ame.domain.resources import Resources
from ame.spec.errors import Problem, SpecError
from ame.spec.model import (
    AmeSecret,
    Artifacts,
    DataSetRef,
    EnvVar,
    Project,
    ResourceRequests,
    SpecModel,
    Task,
    Template,
    TemplateRef,
    VaultSecret,
)
from ame.spec.resolved import ResolvedTask
from ame.spec.suggestions import did_you_mean

ExternalTemplates = Callable[[str, str], Template]
"""``(project, template_name) -> Template``; raise ``LookupError`` when there is none."""

_NOT_INHERITED = frozenset({"name", "from_template", "task_ref"})
_STEP_LOCAL = frozenset({"timeout_seconds", "triggers", "pipeline"})


def resolve_task(project: Project, name: str, *, external_templates: ExternalTemplates | None = None) -> ResolvedTask:
    """The fully resolved task ``name`` of ``project``.

    Raises:
        SpecError: the task does not exist, or its templates/references cannot be resolved
            (unknown names, cycles, a template from another project without
            ``external_templates``, no executor after merging).
    """
    resolver = _Resolver(project, external_templates, strict_external=True)
    if name not in project.tasks:
        raise SpecError.single(
            f"no task named '{name}'{did_you_mean(name, project.tasks)}"
            + (f" (tasks: {', '.join(project.tasks)})" if project.tasks else " (the project has no tasks)"),
            project.source_file,
        )
    resolved = resolver.top_level(name)
    if resolver.problems or resolved is None:
        raise SpecError(resolver.problems or [Problem(project.source_file, None, None, f"cannot resolve '{name}'")])
    return resolved


def resolve_model(
    project: Project, name: str, *, external_templates: ExternalTemplates | None = None
) -> tuple[ResolvedTask, ResolvedTask | None]:
    """The training task and the validation task (None when the model has none) of model ``name``.

    A task written as ``taskRef`` keeps the referenced task's name; an inline one without a name is called
    ``<model>-training`` / ``<model>-validation``.

    Raises:
        SpecError: no such model, no training task, or a task that does not resolve (or is a pipeline).
    """
    models = {model.name: model for model in project.models}
    model = models.get(name)
    if model is None:
        known = f" (models: {', '.join(models)})" if models else " (the project has no models)"
        raise SpecError.single(f"no model named '{name}'{did_you_mean(name, models)}{known}", project.source_file)
    if model.training is None:
        raise SpecError.single(f"model '{name}' has no training task (training: {{task: ...}})", project.source_file)

    def one(task: Task, suffix: str) -> ResolvedTask:
        fallback = task.name or (task.task_ref.name if task.task_ref is not None else f"{name}-{suffix}")
        resolved = _resolve_inline(project, task, fallback, f"cannot resolve {suffix}", external_templates)
        if resolved.is_pipeline:
            raise SpecError.single(
                f"model '{name}': the {suffix} task is a pipeline; a model's tasks run one command each",
                project.source_file,
            )
        return resolved

    training = one(model.training.task, "training")
    validation = one(model.validation_task, "validation") if model.validation_task is not None else None
    return training, validation


def resolve_data_set_producer(
    project: Project, name: str, *, external_templates: ExternalTemplates | None = None
) -> ResolvedTask:
    """The resolved task that produces the project's data set ``name`` (its ``task:`` or ``taskRef:``).

    Raises:
        SpecError: no such data set, it has no task, or the task cannot be resolved.
    """
    data_set = next((d for d in project.data_sets if d.name == name), None)
    if data_set is None:
        known = [d.name for d in project.data_sets]
        raise SpecError.single(
            f"no data set named '{name}'{did_you_mean(name, known)}"
            + (f" (data sets: {', '.join(known)})" if known else " (the project has no dataSets)"),
            project.source_file,
        )
    if data_set.task is None:
        raise SpecError.single(
            f"data set '{name}' has no task to produce it (add 'task:' or 'taskRef:')", project.source_file
        )
    # A producer given by reference runs under the referenced task's name (as `ame task list` shows it).
    ref = data_set.task.task_ref
    fallback = ref.name if ref is not None else f"{name}-producer"
    return _resolve_inline(project, data_set.task, fallback, f"cannot resolve data set '{name}'", external_templates)


def _resolve_inline(
    project: Project, task: Task, fallback: str, failure: str, external_templates: ExternalTemplates | None
) -> ResolvedTask:
    """A task written inline where a model or data set names it (or a `taskRef`), resolved strictly: templates of
    other projects must be given. Raises SpecError with the resolver's problems, or `failure` when it has none."""
    resolver = _Resolver(project, external_templates, strict_external=True)
    resolved = resolver.inline(task, fallback)
    if resolver.problems or resolved is None:
        raise SpecError(resolver.problems or [Problem(project.source_file, None, None, failure)])
    return resolved


def check_project(project: Project, *, external_templates: ExternalTemplates | None = None) -> list[Problem]:
    """Every reference problem in ``project``: resolves all tasks, model tasks and data set tasks.

    Templates from other projects are only checked when ``external_templates`` is given;
    without it, tasks built on them are not required to be complete.
    """
    resolver = _Resolver(project, external_templates, strict_external=False)
    for name in project.tasks:
        resolver.top_level(name)
    for model in project.models:
        if model.training is not None:
            resolver.inline(model.training.task, f"{model.name}-training")
        if model.validation_task is not None:
            resolver.inline(model.validation_task, f"{model.name}-validation")
    for data_set in project.data_sets:
        if data_set.task is not None:
            resolver.inline(data_set.task, f"{data_set.name}-producer")
    resolver.check_data_set_refs()
    return list(dict.fromkeys(resolver.problems))


def external_template_refs(project: Project) -> list[tuple[str, str]]:
    """``(project, template)`` pairs the project takes from other projects, in file order."""
    refs: dict[tuple[str, str], None] = {}
    for task in _all_tasks(project):
        ref = task.from_template
        if ref is not None and ref.project is not None and ref.project != project.name:
            refs[(ref.project, ref.name)] = None
    return list(refs)


class _Resolver:
    def __init__(self, project: Project, external: ExternalTemplates | None, *, strict_external: bool) -> None:
        self.project = project
        self.external = external
        self.strict_external = strict_external
        self.problems: list[Problem] = []
        self._templates: dict[tuple[str | None, str], Any] = {}

    # -- entry points ----------------------------------------------------------------------

    def top_level(self, name: str) -> ResolvedTask | None:
        return self._resolve(self.project.tasks[name], name, (name,), None)

    def inline(self, task: Task, fallback_name: str) -> ResolvedTask | None:
        return self._resolve(task, task.name or fallback_name, (), None)

    # -- tasks -----------------------------------------------------------------------------

    def _resolve(self, task: Task, name: str, stack: tuple[str, ...], defaults: Task | None) -> ResolvedTask | None:
        """Resolve ``task``; ``stack`` holds the project tasks being resolved (for cycles)."""
        fields, incomplete, stack = self._fields(task, stack)
        if fields is None:
            return None
        if fields.pipeline:
            return self._pipeline(task, fields, name, stack, defaults)
        if defaults is not None:
            fields = merge(defaults, fields)
        if fields.executor is None:
            # A task whose `executor:` was written but unusable was reported when it was read.
            if not incomplete and not task.wrote("executor"):
                self._report(
                    task,
                    None,
                    f"task '{name}' has no executor: add one (e.g. 'executor: !poetry' with pythonVersion "
                    "and command), or build it on a template (fromTemplate) or another task (taskRef)",
                )
            return None
        return self._build(fields, name)

    def _fields(self, task: Task, stack: tuple[str, ...]) -> tuple[Task | None, bool, tuple[str, ...]]:
        """The task's own settings with its template and its taskRef target applied.

        Returns the merged settings (``None`` after reporting a problem), whether they may
        be incomplete (built on a template this process cannot see), and ``stack`` extended
        by the tasks reached through taskRef.
        """
        incomplete = False
        fields = task
        if task.from_template is not None:
            base = self._template(task.from_template, task, (), self.project.name)
            if base is _INCOMPLETE:
                incomplete = True
            elif base is None:
                return None, False, stack
            else:
                fields = merge(base, task)
        if task.task_ref is None:
            return fields, incomplete, stack
        ref = task.task_ref
        if ref.project is not None and ref.project != self.project.name:
            self._report(
                task,
                "task_ref",
                f"taskRef to project '{ref.project}': referencing a task of another project is not "
                "supported yet; copy the task, or share its settings through a template",
            )
            return None, False, stack
        target = self.project.tasks.get(ref.name)
        if target is None:
            self._report(task, "task_ref", _unknown("task", ref.name, self.project.tasks, "taskRef"))
            return None, False, stack
        if ref.name in stack:
            self._report(task, "task_ref", f"reference cycle: {' -> '.join([*stack, ref.name])}")
            return None, False, stack
        target_fields, target_incomplete, stack = self._fields(target, (*stack, ref.name))
        if target_fields is None:
            return None, False, stack
        # The referenced task's schedule stays with it; the referring task may set its own.
        referenced = target_fields.model_copy(update={"triggers": None})
        return merge(referenced, fields), incomplete or target_incomplete, stack

    def _pipeline(
        self, task: Task, fields: Task, name: str, stack: tuple[str, ...], defaults: Task | None
    ) -> ResolvedTask | None:
        if fields.executor is not None:
            self._report(
                task,
                None,
                f"task '{name}' gets both a pipeline and an executor (one of them from its template "
                "or taskRef); a task runs either a command or a pipeline",
            )
            return None
        step_defaults = fields.model_copy(update=dict.fromkeys(_STEP_LOCAL | _NOT_INHERITED))
        if defaults is not None:
            step_defaults = merge(defaults, step_defaults)
        stages: list[list[ResolvedTask]] = []
        seen: dict[str, Task] = {}
        failed = False
        for stage in fields.pipeline or []:
            resolved_stage = []
            for step in stage:
                step_name = step.name or (step.task_ref.name if step.task_ref else "step")
                if step_name in seen:
                    self._report(
                        step,
                        None,
                        f"pipeline '{name}' runs '{step_name}' twice; give the second step its own name, "
                        f"e.g. '- name: {step_name}_2' with 'taskRef: {step_name}'",
                    )
                    failed = True
                    continue
                seen[step_name] = step
                if step.triggers is not None and step.task_ref is None:
                    self._report(
                        step,
                        "triggers",
                        "a pipeline step cannot have its own schedule; put triggers on the pipeline",
                    )
                resolved = self._resolve(step, step_name, stack, step_defaults)
                if resolved is None:
                    failed = True
                else:
                    resolved_stage.append(resolved)
            stages.append(resolved_stage)
        if failed:
            return None
        return ResolvedTask(
            name=name,
            project=self.project.name,
            executor=None,
            pipeline=stages,
            timeout_seconds=fields.timeout_seconds,
            triggers=fields.triggers,
        )

    def _build(self, fields: Task, name: str) -> ResolvedTask:
        requests = fields.resources
        return ResolvedTask(
            name=name,
            project=self.project.name,
            executor=fields.executor,
            resources=Resources(
                cpu_millis=requests.cpu_millis,
                memory_bytes=requests.memory_bytes,
                storage_bytes=requests.storage_bytes,
                gpus=requests.gpus,
                gpu_memory_bytes=requests.gpu_memory_bytes,
                gpu_model=requests.gpu_model,
            )
            if requests is not None
            else Resources(),
            environment=list(fields.environment or []),
            secrets=list(fields.secrets or []),
            artifacts=fields.artifacts or Artifacts(),
            data_sets=list(fields.data_sets or []),
            timeout_seconds=fields.timeout_seconds,
            retries=fields.retries or 0,
            loop=fields.loop,
            triggers=fields.triggers,
        )

    # -- templates -------------------------------------------------------------------------

    def _template(
        self, ref: TemplateRef, user: SpecModel, chain: tuple[tuple[str | None, str], ...], home: str | None
    ) -> Any:
        """The template ``ref`` points at, with its own templates applied.

        Returns the merged template, ``None`` after reporting a problem, or ``_INCOMPLETE``
        for a template of another project that cannot be looked up here.
        """
        project = ref.project if ref.project is not None else home
        local = project is None or project == self.project.name
        key = (None if local else project, ref.name)
        if key in chain:
            # Across projects the chain names each template's project, so the loop can be found and broken.
            cycle = " -> ".join(name if owner is None else f"{owner}.{name}" for owner, name in (*chain, key))
            self._report(user, "from_template", f"template cycle: {cycle}")
            return None
        if not chain and key in self._templates:
            return self._templates[key]
        if local:
            template: Template | None = self.project.templates.get(ref.name)
            if template is None:
                self._report(
                    user,
                    "from_template",
                    _unknown("template", ref.name, self.project.templates, "fromTemplate"),
                )
                return None
        else:
            assert project is not None
            if self.external is None:
                if self.strict_external:
                    self._report(
                        user,
                        "from_template",
                        f"template '{ref.name}' comes from project '{project}', which is not available here; "
                        f"pass that project's directory (e.g. --with-project ../{project})",
                    )
                    return None
                return _INCOMPLETE
            try:
                template = self.external(project, ref.name)
            except (LookupError, SpecError) as error:
                if isinstance(error, KeyError):
                    message = f"template '{ref.name}' not found in project '{project}'"
                else:
                    # The lookup's own words say whether the project or the template is missing.
                    message = f"fromTemplate: template '{ref.name}' of project '{project}': {error}"
                self._report(user, "from_template", message)
                return None
        merged: Any = template
        if template.from_template is not None:
            base = self._template(template.from_template, template, (*chain, key), project if not local else None)
            merged = base if base is None or base is _INCOMPLETE else merge(base, template)
        if not chain and merged is not None:
            # Only successes are cached: every task using a broken template gets its own problem.
            self._templates[key] = merged
        return merged

    # -- data sets -------------------------------------------------------------------------

    def check_data_set_refs(self) -> None:
        local = {data_set.name for data_set in self.project.data_sets}
        for task in _all_tasks(self.project):
            for ref in task.data_sets or []:
                if ref.project is not None and ref.project != self.project.name:
                    continue
                if ref.name not in local:
                    message = _unknown("data set", ref.name, local, "dataSets")
                    self._report_at(ref.source_mark() or task.source_mark("data_sets"), message)

    # -- problems --------------------------------------------------------------------------

    def _report(self, model: SpecModel, field: str | None, message: str) -> None:
        self._report_at(model.source_mark(field), message)

    def _report_at(self, mark: tuple[int, int] | None, message: str) -> None:
        line, column = mark if mark is not None else (None, None)
        self.problems.append(Problem(self.project.source_file, line, column, message))


class _Incomplete:
    """Marker for 'built on a template this process cannot see'."""


_INCOMPLETE: Any = _Incomplete()


def merge(base: Task, override: Task) -> Task:
    """``override`` on top of ``base`` by the rules in this module's docstring."""
    updates: dict[str, Any] = {}
    for field in Task.model_fields:
        if field in _NOT_INHERITED:
            continue
        mine, theirs = getattr(override, field), getattr(base, field)
        if mine is None or theirs is None:
            updates[field] = mine if mine is not None else theirs
            continue
        combine = _COMBINE.get(field)
        updates[field] = combine(theirs, mine) if combine is not None else mine
    return override.model_copy(update=updates)


def _merge_resources(base: ResourceRequests, override: ResourceRequests) -> ResourceRequests:
    return base.model_copy(
        update={
            field: getattr(override, field)
            for field in ResourceRequests.model_fields
            if getattr(override, field) is not None
        }
    )


def _merge_env(base: list[EnvVar], override: list[EnvVar]) -> list[EnvVar]:
    merged = {env.key: env for env in base}
    merged.update({env.key: env for env in override})
    return list(merged.values())


def _merge_secrets(
    base: list[AmeSecret | VaultSecret], override: list[AmeSecret | VaultSecret]
) -> list[AmeSecret | VaultSecret]:
    merged = {secret.inject_as: secret for secret in base}
    merged.update({secret.inject_as: secret for secret in override})
    return list(merged.values())


def _merge_artifacts(base: Artifacts, override: Artifacts) -> Artifacts:
    paths = list(dict.fromkeys([*base.paths, *override.paths]))
    save = override.save_changed_files if "save_changed_files" in override.model_fields_set else base.save_changed_files
    return Artifacts(paths=paths, save_changed_files=save)


def _merge_data_sets(base: list[DataSetRef], override: list[DataSetRef]) -> list[DataSetRef]:
    merged = {(ref.project, ref.name): ref for ref in base}
    merged.update({(ref.project, ref.name): ref for ref in override})
    return list(merged.values())


_COMBINE: dict[str, Callable[[Any, Any], Any]] = {
    "resources": _merge_resources,
    "environment": _merge_env,
    "secrets": _merge_secrets,
    "artifacts": _merge_artifacts,
    "data_sets": _merge_data_sets,
}


def _unknown(what: str, name: str, known: Any, key: str) -> str:
    names = list(known)
    hint = did_you_mean(name, names)
    if not names:
        return f"{key}: unknown {what} '{name}' (the project defines no {what}s)"
    listed = ", ".join(names[:10]) + (", …" if len(names) > 10 else "")
    return f"{key}: unknown {what} '{name}'{hint}" + ("" if hint else f" (known: {listed})")


def _all_tasks(project: Project) -> list[Task]:
    """Every task-shaped model in the project, pipeline steps included."""
    found: list[Task] = []

    def visit(task: Task) -> None:
        found.append(task)
        for stage in task.pipeline or []:
            for step in stage:
                visit(step)

    for task in [*project.tasks.values(), *project.templates.values()]:
        visit(task)
    for model in project.models:
        if model.training is not None:
            visit(model.training.task)
        if model.validation_task is not None:
            visit(model.validation_task)
    for data_set in project.data_sets:
        if data_set.task is not None:
            visit(data_set.task)
    return found
