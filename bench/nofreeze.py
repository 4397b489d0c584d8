"""The worker as the product runs it, less the memory settling after start-up
(``worker.app._settle_memory``: ``gc.freeze()`` and a higher young-generation threshold), for
``bench.customers --no-gc-freeze``: what that step changes, measured in the same run."""
from celery import signals

from worker import app as product

signals.worker_ready.disconnect(product._settle_memory)
app = product.app
