"""Every Redis key the product uses, in one registry, all under one prefix (``MSB1_KEY_PREFIX``,
``msb1`` by default; ``{p}`` below). No other module spells a key name.

Records (``worker.store.records``, ``worker.store.batch``):
  ``{p}:state:{integration}:{type}``          hash  record id → last successful transfer
  ``{p}:handled:{integration}:{type}``        hash  record id → version a sync last finished with
  ``{p}:owner:{integration}:{type}``          hash  platform id → the Moment record id that wrote it
  ``{p}:dead:{integration}``                  hash  "{type}:{record id}" → dead letter
  ``{p}:stats:{integration}``                 hash  counters (created, updated, unchanged, failed, ...)
  ``{p}:history:{integration}:{type}:{id}``   list  the record's last syncs, newest first
  ``{p}:history-numbers:{integration}:{type}``  hash  valid number → the Moment id last synced
                                              under it (``history --number``; only numbers
                                              ``NUMBER_OK`` accepts, which say nothing of a person)
  ``{p}:lock:{integration}:{type}:{id}``      one writer per record
  ``{p}:number-lock:{integration}:{type}:{keyed}``  one writer per customer/project number
                                              (the number keyed by HMAC, never in clear)
  ``{p}:numbers:{integration}:{type}``        hash  keyed number → the Moment record id that wrote it
  ``{p}:page-copy:{integration}:{type}:{id}`` the record as a backfill's page listed it, and the
                                              books' record with its number (encrypted, an hour)
  ``{p}:paused``                              hash  integration → when it was paused
Schema (``worker.store.schema``):
  ``{p}:schema``                              the version of what is stored here (absent: 1, the
                                              releases before it, or an empty Redis)
  ``{p}:schema-lock``                         one migrating worker at a time
Coalescing (``worker.store.coalescer``):
  ``{p}:pending:{integration}:{type}:{id}``   a sync of this record is queued (its due time)
  ``{p}:started:{integration}:{type}:{id}:running|dirty|bucket``  a sync runs; a change came
                                              meanwhile; the record's start bucket
Lanes and runs (``worker.store.lanes``, ``worker.store.runs``):
  ``{p}:bulk:{integration}``                  list  the company's bulk work, waiting its turn
  ``{p}:bulk-turns``                          list  companies with bulk work, in turn
  ``{p}:bulk-handover``                       list  bulk work taken but not yet published
  ``{p}:bulk-refill``                         one refiller at a time
  ``{p}:lane:{integration}:{lane}``           hash  queued / started / finished counts
  ``{p}:lane-done:{integration}:{lane}:{bucket}``  finishes per ten seconds
  ``{p}:run:{run id}``                        hash  a backfill's or replay's progress
  ``{p}:run-of:{integration}:{type}``         hash  record id → run id
  ``{p}:runs``                                zset  run ids by start time
  ``{p}:backfill:{integration}:{type}:{since}``  the page a stopped backfill resumes from
Change feed (``tasks.poll``):
  ``{p}:cursor:{integration}:{type}``         the poll's "modified since" cursor
  ``{p}:poll-guard:{integration}:{type}``     one poll of an integration and type at a time
  ``{p}:last-poll``                           when beat's poll last ran (beat's health)
  ``{p}:redbeat:*``                           beat's schedule and lock (RedBeat)
Outages (``worker.circuit``):
  ``{p}:circuit:{scope}:{service}``           hash  an open circuit (reason, since, last error, told)
  ``{p}:circuit-fails:{scope}:{service}``     transient failures in a row
  ``{p}:circuit-probe:{scope}:{service}``     set while one sync probes
Fleet outages (``worker.notices.outages``): one per service, host and reason, whatever the
companies; ``{outage}`` is ``{service}:{reason}:{host}``
  ``{p}:outage:{outage}``                     hash  since, last error, when the operator was told
  ``{p}:outage-companies:{outage}``           hash  company → when its circuit joined the outage
  ``{p}:outage-open:{outage}``                set   the companies whose circuit is open now
Audit (``worker.store.audit``):
  ``{p}:audit``                               list  who did what, when and why (pause, resume, replay,
                                              purge, backfill), newest first, as JSON
Reconciliation (``worker.reconcile``):
  ``{p}:reconcile:{integration}``             list  the runs, newest first (counts and differences, as JSON)
  ``{p}:reconcile-lock:{integration}:{month}``  one run of a month at a time
Notices (``worker.notices.digest``):
  ``{p}:notice-window:{integration}``         set while a window is open
  ``{p}:digest:{integration}``                hash  dead letter → the item to mail (encrypted)
  ``{p}:digest-due:{integration}``            set while a digest send is scheduled
  ``{p}:digest-lock:{integration}``           one digest sender at a time
Platform events (``worker.intake.events``, ``tasks.events``):
  ``{p}:event-pending:{integration}:{type}:{platform id}``  a check of a record the books sent an event for is queued
  ``{p}:event-told:{integration}:{type}:{id}``  the company was told of a change in the books (one email a burst)
  ``{p}:event-written-back:{integration}:{type}:{id}``  write-backs of the record this hour (a loop's brake)
  ``{p}:event-plans``                       hash  integration → its event plan (id, when, or why refused)
API clients (``clients``):
  ``{p}:rate:{bucket}``                       hash  a shared rate limit (tokens, learned rate,
                                              Retry-After, per-second counts of calls and 429s);
                                              buckets moment:{company}, sb1:company:{digest},
                                              sb1:host:{host}
  ``{p}:sb1-token:{digest}``, ``…:lock``      the shared SpareBank 1 access token (encrypted), and who fetches it
"""
from __future__ import annotations

import hashlib


class Keys:
    def __init__(self, prefix: str):
        self.prefix = prefix

    # --- records
    def state(self, integration_id: str, data_type: str) -> str:
        return f"{self.prefix}:state:{integration_id}:{data_type}"

    def handled(self, integration_id: str, data_type: str) -> str:
        return f"{self.prefix}:handled:{integration_id}:{data_type}"

    def owner(self, integration_id: str, data_type: str) -> str:
        return f"{self.prefix}:owner:{integration_id}:{data_type}"

    def dead(self, integration_id: str) -> str:
        return f"{self.prefix}:dead:{integration_id}"

    def stats(self, integration_id: str) -> str:
        return f"{self.prefix}:stats:{integration_id}"

    def history(self, integration_id: str, data_type: str, record_id: int) -> str:
        return f"{self.prefix}:history:{integration_id}:{data_type}:{record_id}"

    def history_numbers(self, integration_id: str, data_type: str) -> str:
        return f"{self.prefix}:history-numbers:{integration_id}:{data_type}"

    def lock(self, integration_id: str, data_type: str, record_id: int) -> str:
        return f"{self.prefix}:lock:{integration_id}:{data_type}:{record_id}"

    def number_lock(self, integration_id: str, data_type: str, number: object) -> str:
        return f"{self.prefix}:number-lock:{integration_id}:{data_type}:{number}"

    def numbers(self, integration_id: str, data_type: str) -> str:
        return f"{self.prefix}:numbers:{integration_id}:{data_type}"

    def page_copy(self, integration_id: str, data_type: str, record_id: int) -> str:
        return f"{self.prefix}:page-copy:{integration_id}:{data_type}:{record_id}"

    def paused(self) -> str:
        return f"{self.prefix}:paused"

    # --- schema (worker.store.schema)
    def schema(self) -> str:
        return f"{self.prefix}:schema"

    def schema_lock(self) -> str:
        return f"{self.prefix}:schema-lock"

    def everything(self) -> str:
        """A pattern of every key under the prefix."""
        return f"{self.prefix}:*"

    def pattern(self, kind: str) -> str:
        """A pattern of every key of one kind ("state", "number-lock", ...)."""
        return f"{self.prefix}:{kind}:*"

    # --- coalescing
    def pending(self, integration_id: str, data_type: str, record_id: int) -> str:
        return f"{self.prefix}:pending:{integration_id}:{data_type}:{record_id}"

    def started(self, integration_id: str, data_type: str, record_id: int) -> tuple[str, str, str]:
        """A sync of the record runs; a change came while it ran; the record's start bucket."""
        base = f"{self.prefix}:started:{integration_id}:{data_type}:{record_id}"
        return f"{base}:running", f"{base}:dirty", f"{base}:bucket"

    # --- lanes and runs
    def bulk_list_prefix(self) -> str:
        """What a company's bulk list's key starts with (the company's id follows)."""
        return f"{self.prefix}:bulk:"

    def bulk_list(self, integration_id: str) -> str:
        return f"{self.bulk_list_prefix()}{integration_id}"

    def bulk_turns(self) -> str:
        return f"{self.prefix}:bulk-turns"

    def bulk_handover(self) -> str:
        return f"{self.prefix}:bulk-handover"

    def bulk_refill(self) -> str:
        return f"{self.prefix}:bulk-refill"

    def lane_counts(self, integration_id: str, lane: str) -> str:
        return f"{self.prefix}:lane:{integration_id}:{lane}"

    def lane_done(self, integration_id: str, lane: str, bucket: int) -> str:
        return f"{self.prefix}:lane-done:{integration_id}:{lane}:{bucket}"

    def run(self, run_id: str) -> str:
        return f"{self.prefix}:run:{run_id}"

    def run_of(self, integration_id: str, data_type: str) -> str:
        return f"{self.prefix}:run-of:{integration_id}:{data_type}"

    def runs(self) -> str:
        return f"{self.prefix}:runs"

    def backfill(self, integration_id: str, data_type: str, since: str) -> str:
        return f"{self.prefix}:backfill:{integration_id}:{data_type}:{since}"

    # --- change feed
    def cursor(self, integration_id: str, data_type: str) -> str:
        return f"{self.prefix}:cursor:{integration_id}:{data_type}"

    def poll_guard(self, integration_id: str, data_type: str) -> str:
        return f"{self.prefix}:poll-guard:{integration_id}:{data_type}"

    def last_poll(self) -> str:
        """When beat's poll last ran (seconds since the epoch): the health signal of beat."""
        return f"{self.prefix}:last-poll"

    def redbeat(self) -> str:
        """RedBeat's own key prefix (its schedule and lock)."""
        return f"{self.prefix}:redbeat"

    # --- outages
    def circuit(self, kind: str, scope: str, service: str) -> str:
        """``kind``: circuit (open), circuit-fails (failures in a row) or circuit-probe."""
        assert kind in ("circuit", "circuit-fails", "circuit-probe"), kind
        return f"{self.prefix}:{kind}:{scope}:{service}"

    def open_circuits_pattern(self) -> str:
        return f"{self.prefix}:circuit:*"

    def outage(self, service: str, reason: str, host: str) -> tuple[str, str, str]:
        """A fleet outage's keys: its facts, its companies, the companies still out."""
        name = f"{service}:{reason}:{host}"
        return (f"{self.prefix}:outage:{name}", f"{self.prefix}:outage-companies:{name}",
                f"{self.prefix}:outage-open:{name}")

    # --- notices
    def notice(self, kind: str, integration_id: str) -> str:
        """``kind``: notice-window, digest, digest-due or digest-lock."""
        assert kind in ("notice-window", "digest", "digest-due", "digest-lock"), kind
        return f"{self.prefix}:{kind}:{integration_id}"

    # --- audit (worker.store.audit)
    def audit(self) -> str:
        """list: the operators' actions, newest first (no personal data)."""
        return f"{self.prefix}:audit"

    # --- reconciliation (worker.reconcile)
    def reconcile_lock(self, integration_id: str, month: str) -> str:
        """one reconciliation of an integration's month at a time (the nightly run, a command)"""
        return f"{self.prefix}:reconcile-lock:{integration_id}:{month}"

    def reconcile_history(self, integration_id: str) -> str:
        """list: the integration's reconciliation runs, newest first (no personal data)."""
        return f"{self.prefix}:reconcile:{integration_id}"

    # --- platform events
    def event_pending(self, integration_id: str, data_type: str, sb1_id: int) -> str:
        return f"{self.prefix}:event-pending:{integration_id}:{data_type}:{sb1_id}"

    def event_written_back(self, integration_id: str, data_type: str, record_id: int) -> str:
        """write-backs of one record after books events, counted for an hour (a loop's brake)"""
        return f"{self.prefix}:event-written-back:{integration_id}:{data_type}:{record_id}"

    def event_told(self, integration_id: str, data_type: str, record_id: int) -> str:
        return f"{self.prefix}:event-told:{integration_id}:{data_type}:{record_id}"

    def event_plans(self) -> str:
        return f"{self.prefix}:event-plans"

    # --- API clients
    def rate_limits(self) -> str:
        """The prefix of the rate limiter's buckets (``clients.ratelimit`` adds a bucket's
        name, below)."""
        return f"{self.prefix}:rate"

    @staticmethod
    def moment_bucket(moment_company: str) -> str:
        return f"moment:{moment_company}"

    @staticmethod
    def sb1_company_bucket(company_key: str) -> str:
        """By a digest of the company key: the key itself is a secret."""
        return f"sb1:company:{hashlib.sha256(company_key.encode()).hexdigest()[:16]}"

    @staticmethod
    def sb1_host_bucket(host: str) -> str:
        return f"sb1:host:{host}"

    def sb1_token(self, token_url: str, client_id: str) -> str:
        """The cached access token of one client at one identity server."""
        digest = hashlib.sha256(f"{token_url}|{client_id}".encode()).hexdigest()[:16]
        return f"{self.prefix}:sb1-token:{digest}"
