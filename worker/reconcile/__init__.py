"""Reconciliation (avstemming) of one integration and month against Moment: ``run.reconcile``
reads both sides in bulk (``books``), compares them (``compare``, pure), repairs what Moment
owns and keeps the run (``history``)."""
