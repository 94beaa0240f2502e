"""The ``ame.yml`` project file: models, loading with precise errors, and resolution.

Typical use::

    from ame.spec import load_project, resolve_task

    project = load_project(Path("."))          # SpecError lists every problem
    task = resolve_task(project, "train_my_model")

Pure domain code: no I/O library is imported here (files are read with the standard
library only, YAML parsing is imported on first use).
"""

from ame.domain.executors import ExecutorKind
from ame.spec.errors import Problem, SpecError
from ame.spec.loader import (
    PROJECT_FILE_NAMES,
    find_project_file,
    load_project,
    load_project_text,
    templates_from,
)
from ame.spec.model import (
    AmeSecret,
    Artifacts,
    DataSet,
    DataSetRef,
    Deployment,
    EnvVar,
    Executor,
    MlModel,
    Project,
    ResourceRequests,
    Task,
    TaskRef,
    Template,
    TemplateRef,
    Training,
    Triggers,
    VaultSecret,
    Webhook,
)
from ame.spec.resolve import (
    ExternalTemplates,
    check_project,
    external_template_refs,
    resolve_data_set_producer,
    resolve_model,
    resolve_task,
)
from ame.spec.resolved import ResolvedTask
from ame.spec.yaml_tree import Limits

__all__ = [
    "PROJECT_FILE_NAMES",
    "AmeSecret",
    "Artifacts",
    "DataSet",
    "DataSetRef",
    "Deployment",
    "EnvVar",
    "Executor",
    "ExecutorKind",
    "ExternalTemplates",
    "Limits",
    "MlModel",
    "Problem",
    "Project",
    "ResolvedTask",
    "ResourceRequests",
    "SpecError",
    "Task",
    "TaskRef",
    "Template",
    "TemplateRef",
    "Training",
    "Triggers",
    "VaultSecret",
    "Webhook",
    "check_project",
    "external_template_refs",
    "find_project_file",
    "load_project",
    "load_project_text",
    "resolve_data_set_producer",
    "resolve_model",
    "resolve_task",
    "templates_from",
]
