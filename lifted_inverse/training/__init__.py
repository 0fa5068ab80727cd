"""Training jobs: task registry, lifted and backprop trainers, metrics files and plots."""
from . import digits  # noqa: F401  (registers the digits tasks)
from .loop import METHODS, LiftedTrainer, TrainConfig, make_trainer, train
from .tasks import TASKS, Task, TaskConfig, available_tasks, make_task, register_task

__all__ = [
           "METHODS",
           "TASKS",
           "LiftedTrainer",
           "Task",
           "TaskConfig",
           "TrainConfig",
           "available_tasks",
           "make_task",
           "make_trainer",
           "register_task",
           "train",
]
