"""Run in every worker process of the Ray this driver starts or joins (Ray's
``worker_process_setup_hook``): a storage fault is told by the runner in one line (exit 3), so the
tracebacks Ray Train logs for it in its worker and its controller, which Ray echoes on the driver's
terminal, are left out. Any other error keeps its traceback."""
from __future__ import annotations

import logging
import sys

LOGGERS = ("ray.train.v2._internal.util",  # a worker: "Error in training function: Traceback ..."
           "ray.train.v2._internal.execution.failure_handling.default")  # the controller: "[FailurePolicy] RAISE ..."


class _NoStorageFaultTraceback(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        from raypair.trials.faults import fault_in_text, storage_fault

        error = (record.exc_info or sys.exc_info())[1]
        return not (storage_fault(error) or fault_in_text(str(error or "")) or fault_in_text(record.getMessage()))


def setup() -> None:
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _NoStorageFaultTraceback) for f in logger.filters):
            logger.addFilter(_NoStorageFaultTraceback())
