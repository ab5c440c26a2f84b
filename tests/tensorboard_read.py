"""Reads a TensorBoard log folder with TensorBoard's own EventAccumulator and prints its scalars as JSON:
{"tags": {tag: [[step, value], ...]}, "file_version": ...}. Used by tests/tensorboard_test.ts and
tests/validation_test.ts (PYTHONPATH holds .tools/tb-pylib, which tools/setup.sh installs)."""
import json
import sys

from tensorboard.backend.event_processing import event_accumulator

accumulator = event_accumulator.EventAccumulator(sys.argv[1], size_guidance={event_accumulator.SCALARS: 0})
accumulator.Reload()
tags = {tag: [[e.step, e.value] for e in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]}
print(json.dumps({"tags": tags, "file_version": accumulator.file_version}))
