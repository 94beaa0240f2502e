"""AME: declare machine-learning work in ame.yml and run it locally or on the AME control plane."""

from ame.peach import initialize_tasks_info
from ame.task_arguments import in_task, task_args

__version__ = "0.1.0"

__all__ = ["__version__", "in_task", "initialize_tasks_info", "task_args"]
