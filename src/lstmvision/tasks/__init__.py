"""What the trainer trains. A task reads the data, builds the model and its loss, and scores the model; the loop,
checkpoints, resume, DDP, AMP, EMA and progress are the trainer's and the same for every task.

- `classify` (`lstmvision.tasks.classify.ClassificationTask`): image classification, top-1 / top-5 (the default).
- `segment` (`lstmvision.tasks.segment.SegmentationTask`): semantic segmentation, mIoU / aAcc / mAcc.
- `detect` (`lstmvision.tasks.detect.DetectionTask`): object detection and instance segmentation, COCO AP.

`cfg['task']` picks one; `get_task` returns it.
"""
from __future__ import annotations

from lstmvision.tasks.base import Data, Task
from lstmvision.tasks.classify import ClassificationTask
from lstmvision.tasks.detect import DetectionTask
from lstmvision.tasks.segment import SegmentationTask

TASKS: dict[str, type[Task]] = {"classify": ClassificationTask, "segment": SegmentationTask, "detect": DetectionTask}

__all__ = ["TASKS", "ClassificationTask", "Data", "DetectionTask", "SegmentationTask", "Task", "get_task"]


def get_task(name: str | None) -> Task:
    """The task `name` ('classify' when None)."""
    if name is None:
        return ClassificationTask()
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose {', '.join(TASKS)}")
    return TASKS[name]()
