"""The operator console (``moment-sb1 console``): a small server-rendered web page behind a
login, for viewers and operators. ``app``: the Flask app, sessions and protection against
cross-site requests; ``auth``: the users file; ``views``: the pages; ``actions``: pause,
resume and replay, each written to the audit log (``worker.store.audit``)."""
