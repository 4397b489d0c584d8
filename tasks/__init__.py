"""Task modules, one per data type: each declares its ``TYPE`` (``schemas.datatypes``) and its
body, and registers its task with ``worker.sync.registry.sync_task``; the worker loads them through
``worker.broker.TASK_MODULES``."""
