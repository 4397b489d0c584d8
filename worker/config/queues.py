"""The two lanes and their Celery queues (``worker.store.lanes`` says how they are kept).

**live** (``moment-sb1``): webhooks, the producer API, the poll, single replays.
**bulk** (``moment-sb1-bulk``): backfills and replays of many.
"""
LIVE_QUEUE = "moment-sb1"
BULK_QUEUE = "moment-sb1-bulk"
LIVE, BULK = "live", "bulk"
