"""Everything a task needs, built once per worker process: settings, integrations,
Redis, and the API clients for each integration (HTTP connections are shared by its threads)."""
from __future__ import annotations

import hashlib
import hmac
import threading
from email.message import EmailMessage
from functools import cached_property
from urllib.parse import urlsplit

from redis import Redis

from clients.files import FilesClient
from clients.http import POOL_SIZE, Http
from clients.moment import MomentClient
from clients.ratelimit import Bucket, Limited, RateLimiter
from clients.sb1 import Credentials, SB1Client, TokenProvider
from worker.broker import publish_digest
from worker.circuit import Circuits
from worker.config.integrations import Integration, load_integrations
from worker.config.redis_url import RedisTarget
from worker.config.settings import Settings
from worker.notices.digest import Notices
from worker.notices.mail import send_email
from worker.store.coalescer import Coalescer
from worker.store.keys import Keys
from worker.store.lanes import Lanes
from worker.store.pages import PageCopies
from worker.store.records import DeadLetters, History, Pauses, Stats, SyncState
from worker.store.runs import Runs

# HKDF's ``info`` for the key of the record digests (``schemas.sb1.fingerprint``): one key, one use
RECORD_DIGEST_KEY_INFO = b"moment-sb1/record-digests/v1"
# ... and for the key that encrypts the failure notices collected for a digest (worker.notices.digest)
NOTICE_KEY_INFO = b"moment-sb1/collected-notices/v1"
# ... and for the key that encrypts the page copies a backfill keeps for its syncs (worker.store.pages)
PAGE_COPY_KEY_INFO = b"moment-sb1/page-copies/v1"


class UnknownIntegration(KeyError):
    pass


class Runtime:
    def __init__(self, settings: Settings, integrations: dict[str, Integration] | None = None,
                 redis_client: Redis | None = None):
        self.settings = settings
        self._integrations = integrations
        self._redis = redis_client
        self._lookups: dict = {}
        self._tokens: TokenProvider | None = None
        self._credentials: Credentials | None = None
        self._tokens_mutex = threading.RLock()

    @cached_property
    def integrations(self) -> dict[str, Integration]:
        if self._integrations is None:
            self._integrations = load_integrations(self.settings.integrations_file)
        return self._integrations

    def integration(self, integration_id: str) -> Integration:
        try:
            return self.integrations[integration_id]
        except KeyError:
            raise UnknownIntegration(integration_id) from None

    @cached_property
    def redis(self) -> Redis:
        return self._redis or RedisTarget.parse(self.settings.redis_url).client(decode_responses=True,
                                                                                health_check_interval=30)

    @cached_property
    def keys(self) -> Keys:
        return Keys(self.settings.key_prefix)

    @cached_property
    def state(self) -> SyncState:
        return SyncState(self.redis, self.keys)

    @cached_property
    def dead_letters(self) -> DeadLetters:
        return DeadLetters(self.redis, self.keys)

    @cached_property
    def coalescer(self) -> Coalescer:
        return Coalescer(self.redis, self.keys, self.settings.coalesce_window, self.settings.pending_ttl,
                         max_per_window=self.settings.coalesce_max_per_window,
                         running_ttl=max(1, int(self.settings.lock_timeout)))

    @cached_property
    def circuits(self) -> Circuits:
        return Circuits(self.redis, self.keys, self.settings, integrations=lambda: self.integrations,
                        probe=self.probe, send_email=self.send_email)

    def probe(self, integration: Integration, service: str) -> None:
        """A cheap read that needs the service (and, for SpareBank 1, a token); raises when
        it fails. Circuits probe with it."""
        if service == "moment":
            self.moment(integration).probe()
        elif service == "sb1":
            self.sb1(integration).probe()
        else:
            self.tokens.token()

    @cached_property
    def lanes(self) -> Lanes:
        return Lanes(self.redis, self.keys, self.settings.bulk_queue_target)

    @cached_property
    def pages(self) -> PageCopies:
        return PageCopies(self.redis, self.keys, key=lambda: self.credentials.derive_key(PAGE_COPY_KEY_INFO))

    @cached_property
    def runs(self) -> Runs:
        return Runs(self.redis, self.keys)

    @cached_property
    def pauses(self) -> Pauses:
        return Pauses(self.redis, self.keys)

    @cached_property
    def history(self) -> History:
        return History(self.redis, self.keys, self.settings.history_days)

    @cached_property
    def notices(self) -> Notices:
        return Notices(self.redis, self.keys, self.settings, self.dead_letters, send_email=self.send_email,
                       publish_digest=publish_digest, key=lambda: self.credentials.derive_key(NOTICE_KEY_INFO))

    def send_email(self, msg: EmailMessage) -> None:
        send_email(self.settings, msg)

    @cached_property
    def stats(self) -> Stats:
        return Stats(self.redis, self.keys)

    def record_lock(self, integration_id: str, data_type: str, record_id: int):
        """The per-record lock: one writer per record across every worker process."""
        return self.redis.lock(self.keys.lock(integration_id, data_type, record_id),
                               timeout=self.settings.lock_timeout, blocking_timeout=self.settings.lock_wait)

    def number_lock(self, integration_id: str, data_type: str, number: object):
        """One writer per customer or project number: two Moment records that claim the same
        number are written one after the other, so the second finds the first's record. The
        key holds the number keyed by the deployment's digest key, never the number itself (a
        project number may be a national identity number)."""
        return self.redis.lock(self.keys.number_lock(integration_id, data_type, self.keyed(number)),
                               timeout=self.settings.lock_timeout, blocking_timeout=self.settings.lock_wait)

    def keyed(self, number: object) -> str:
        """A customer or project number as Redis may hold it: keyed by the deployment's digest
        key (HMAC), never in clear."""
        return hmac.new(self.digest_key, str(number).encode(), hashlib.sha256).hexdigest()[:32]

    @cached_property
    def http(self) -> Http:
        """Keep-alive connections shared by every thread (one idle connection per thread
        and host is kept)."""
        return Http(pool_size=max(POOL_SIZE, self.settings.concurrency))

    @property
    def credentials(self) -> Credentials:
        """The integrator's SpareBank 1 identity (its private key read once)."""
        with self._tokens_mutex:
            if self._credentials is None:
                s = self.settings
                if not s.sb1_client_id:
                    raise RuntimeError("MSB1_SB1_CLIENT_ID is not set")
                self._credentials = Credentials.load(s.sb1_client_id, key_file=s.sb1_private_key_file,
                                                     p12_file=s.sb1_p12_file, p12_password=s.sb1_p12_password,
                                                     client_secret=s.sb1_client_secret)
            return self._credentials

    @cached_property
    def digest_key(self) -> bytes:
        """The deployment's key of the record digests kept in Redis (HMAC-SHA256), derived from
        the credentials every worker holds and Redis does not: equal in every worker process,
        different in every deployment (docs/architecture.md: when it changes)."""
        return self.credentials.derive_key(RECORD_DIGEST_KEY_INFO)

    @property
    def tokens(self) -> TokenProvider:
        with self._tokens_mutex:
            if self._tokens is None:
                s = self.settings
                creds = self.credentials
                self._tokens = TokenProvider(s.token_url, creds, redis_client=self.redis, http=self.http,
                                             cache_key=self.keys.sb1_token(s.token_url, creds.client_id),
                                             timeouts=s.timeouts,
                                             refresh_margin=s.token_refresh_margin)
            return self._tokens

    @cached_property
    def limiter(self) -> RateLimiter:
        return RateLimiter(self.redis, self.keys.rate_limits())

    def rate_buckets(self, integration: Integration) -> dict[str, tuple[Bucket, ...]]:
        """Per service, the rate limit buckets of an integration's calls (the company's first)."""
        s, i = self.settings, integration
        moment = i.moment_rate_limit if i.moment_rate_limit is not None else s.moment_rate_limit
        sb1 = i.sb1_rate_limit if i.sb1_rate_limit is not None else s.sb1_rate_limit
        host = urlsplit(i.sb1_base_url).netloc
        return {"Moment": (Bucket(Keys.moment_bucket(i.moment_company), moment),),
                SB1Client.service: (Bucket(Keys.sb1_company_bucket(i.company_key), sb1),
                                    Bucket(Keys.sb1_host_bucket(host), s.sb1_host_rate_limit))}

    def moment(self, integration: Integration) -> MomentClient:
        limits = Limited(self.limiter, self.rate_buckets(integration)["Moment"], "Moment")
        return MomentClient(integration.moment_company, integration.secret("moment_api_key"),
                            base_url=integration.moment_base_url, http=self.http,
                            timeouts=self.settings.timeouts, limits=limits)

    def sb1(self, integration: Integration) -> SB1Client:
        limits = Limited(self.limiter, self.rate_buckets(integration)[SB1Client.service], SB1Client.service)
        return SB1Client(integration.sb1_base_url, integration.company_key, self.tokens,
                         http=self.http, timeouts=self.settings.timeouts,
                         lookup_cache=self._lookups, limits=limits)

    def files(self, integration: Integration) -> FilesClient:
        """The company's files (upload, link): the Files host's calls share the company's limit."""
        limits = Limited(self.limiter, self.rate_buckets(integration)[SB1Client.service], FilesClient.service)
        return FilesClient(self.sb1(integration), integration.sb1_base_url, http=self.http,
                           timeouts=self.settings.timeouts, limits=limits)


_runtime: Runtime | None = None
_runtime_mutex = threading.Lock()


def get_runtime() -> Runtime:
    """The process's runtime, from the environment (built on first use)."""
    global _runtime
    with _runtime_mutex:
        if _runtime is None:
            _runtime = Runtime(Settings.from_env())
        return _runtime
