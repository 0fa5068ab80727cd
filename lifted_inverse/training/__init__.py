"""Training: tasks (data + network + scoring + presets), one config, one trainer, two steps."""
from . import digits  # noqa: F401  (registers the digits tasks)
from .config import BACKPROP_SOLVERS, ENGINE_DEFAULTS, METHODS, TrainConfig, resolve
from .steps import BackpropStep, LiftedStep
from .tasks import TASKS, Task, TaskConfig, available_tasks, make_task, register_task
from .trainer import Trainer, make_step, train

__all__ = [
    "BACKPROP_SOLVERS",
    "ENGINE_DEFAULTS",
    "METHODS",
    "TASKS",
    "BackpropStep",
    "LiftedStep",
    "Task",
    "TaskConfig",
    "TrainConfig",
    "Trainer",
    "available_tasks",
    "make_step",
    "make_task",
    "register_task",
    "resolve",
    "train",
]
