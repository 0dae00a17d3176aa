"""Every setting of Manifest Syncer: its one home, its default and its environment override."""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote
from urllib.parse import unquote
from urllib.parse import urlsplit

# Every setting can also be given as FLASK_<NAME>, which wins over <NAME> (see README), but
# for FIXED_SETTINGS.
ENV_PREFIX = "FLASK_"
# The session cookie's security flags: fixed here on purpose, no variable changes them.
FIXED_SETTINGS = frozenset(
    {"SESSION_COOKIE_HTTPONLY", "SESSION_COOKIE_SAMESITE", "SESSION_COOKIE_SECURE"}
)

DEFAULT_TABLES = (
    "DestinyInventoryItemDefinition",
    "DestinyClassDefinition",
    "DestinyDamageTypeDefinition",
    # Not shown by a page: it names the stats a release message says moved ("Impact 30 → 33").
    "DestinyStatDefinition",
    "DestinyInventoryBucketDefinition",
    "DestinyItemTierTypeDefinition",
)


# Settings a release no longer reads, and why: a deployment that still sets one is told so at
# start (app/__init__.py), rather than left to think it still does something.
RETIRED_SETTINGS = {
    "MANIFEST_PROJECTIONS": "every definition is now kept whole (docs/DECISIONS.md)",
    "MANIFEST_DEFAULT_PROJECTION": "every definition is now kept whole (docs/DECISIONS.md)",
}


def retired_settings_set() -> list[str]:
    """Return the retired settings the environment still sets (as NAME or FLASK_NAME)."""
    return [
        f"{variable} is no longer read: {why}"
        for name, why in RETIRED_SETTINGS.items()
        for variable in (name, ENV_PREFIX + name)
        if env_str(variable) is not None
    ]


def env_str(name: str, default: str | None = None) -> str | None:
    """Return the environment variable `name`, or `default` when it is unset or blank."""
    value = os.environ.get(name, "").strip()
    return value or default


def env_int(name: str, default: int) -> int:
    """Return the environment variable `name` as a whole number, or `default` when unset."""
    value = env_str(name)
    return default if value is None else as_int(name, value)


def env_float(name: str, default: float) -> float:
    """Return the environment variable `name` as a number, or `default` when unset."""
    value = env_str(name)
    return default if value is None else as_float(name, value)


def env_bool(name: str, default: bool) -> bool:
    """Return the environment variable `name` as a switch, or `default` when unset."""
    value = env_str(name)
    return default if value is None else as_bool(name, value)


def env_list(name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    """Return the environment variable `name` split at commas, or `default` when unset."""
    value = env_str(name)
    return default if value is None else as_list(value)


def as_int(name: str, value: str) -> int:
    """Read the text `value` of the variable `name` as a whole number."""
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name} must be a whole number, got {value!r}") from None


def as_float(name: str, value: str) -> float:
    """Read the text `value` of the variable `name` as a number."""
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {value!r}") from None


def as_bool(name: str, value: str) -> bool:
    """Read the text `value` of the variable `name` as a switch."""
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name} must be true or false, got {value!r}")


def as_list(value: str) -> tuple[str, ...]:
    """Read the text `value` as a list separated by commas."""
    return tuple(part.strip() for part in value.split(",") if part.strip())


class Config:
    """Defaults shared by every environment; each but FIXED_SETTINGS can be overridden from the
    environment."""

    SECRET_KEY = env_str("SECRET_KEY")
    LOG_LEVEL = env_str("LOG_LEVEL", "INFO")
    # "text" (one line a person reads) or "json" (one object per line, with the request or
    # task id, for a log platform to follow one sync from trigger to message).
    LOG_FORMAT = env_str("LOG_FORMAT", "text")
    # GET /metrics (Prometheus): open when unset, else it asks for this bearer token.
    METRICS_TOKEN = env_str("METRICS_TOKEN")
    REDIS_URL = env_str("REDIS_URL", "redis://127.0.0.1:6379/0")
    # TLS certificate checks for rediss:// URLs: "required", "optional" or "none" (Heroku
    # Redis serves a self-signed certificate, so Heroku needs "none").
    REDIS_SSL_CERT_REQS = env_str("REDIS_SSL_CERT_REQS", "required")
    # A read replica of REDIS_URL's server: the reading pages, the API and the mirror read
    # from it; writes, locks, triggers and tasks stay on the primary. Unset: all on REDIS_URL.
    REDIS_REPLICA_URL = env_str("REDIS_REPLICA_URL")
    # Redis Sentinel, to follow a failover: its addresses (comma-separated
    # sentinel://[:password@]host:port[/db], the password and db being the Redis server's)
    # and the name of the primary it watches. Set, they replace REDIS_URL (and
    # REDIS_REPLICA_URL: reads go to a replica Sentinel names) for the app and for Celery.
    REDIS_SENTINEL_URLS = env_list("REDIS_SENTINEL_URLS", ())
    REDIS_SENTINEL_MASTER = env_str("REDIS_SENTINEL_MASTER")
    # The sentinels' own password, when they require one (not the Redis server's).
    REDIS_SENTINEL_PASSWORD = env_str("REDIS_SENTINEL_PASSWORD")

    # Celery. The broker defaults to REDIS_URL; results (kept only for the polled sync task)
    # go to Redis.
    CELERY_BROKER_URL = env_str("CELERY_BROKER_URL")
    CELERY_RESULT_BACKEND = env_str("CELERY_RESULT_BACKEND")
    CELERY_QUEUE = env_str("CELERY_QUEUE", "manifest")
    CELERY_BEAT_SCHEDULE_FILE = env_str("CELERY_BEAT_SCHEDULE_FILE", "celerybeat-schedule")
    # Time limits of one sync (Windows ignores them: see README).
    SYNC_SOFT_TIME_LIMIT = env_int("SYNC_SOFT_TIME_LIMIT", 900)
    SYNC_TIME_LIMIT = env_int("SYNC_TIME_LIMIT", 1200)
    SYNC_MAX_RETRIES = env_int("SYNC_MAX_RETRIES", 5)
    # How long a task's progress and result stay readable by /api/v1/tasks/<id>.
    TASK_RESULT_SECONDS = env_int("TASK_RESULT_SECONDS", 86400)

    # Links in messages built outside a request (tasks, Slack) use these.
    SERVER_NAME = env_str("SERVER_NAME")
    PREFERRED_URL_SCHEME = env_str("PREFERRED_URL_SCHEME", "http")

    # Slack: an incoming webhook, or a bot token and a channel. Off when neither is set.
    SLACK_WEBHOOK_URL = env_str("SLACK_WEBHOOK_URL")
    SLACK_BOT_TOKEN = env_str("SLACK_BOT_TOKEN")
    SLACK_CHANNEL = env_str("SLACK_CHANNEL")
    SLACK_API_URL = env_str("SLACK_API_URL", "https://slack.com/api/")
    SLACK_TIMEOUT = env_int("SLACK_TIMEOUT", 10)
    # Transient trouble (maintenance, throttling, outages) is reported once it lasts this long.
    SLACK_ALERT_AFTER_SECONDS = env_int("SLACK_ALERT_AFTER_SECONDS", 3600)
    # Sending retries back off from this many seconds, doubling up to 15 minutes.
    SLACK_RETRY_SECONDS = env_int("SLACK_RETRY_SECONDS", 30)
    SLACK_MAX_RETRIES = env_int("SLACK_MAX_RETRIES", 12)
    # Discord: a channel's webhook URL (a secret: whoever has it can post). Off when unset.
    DISCORD_WEBHOOK_URL = env_str("DISCORD_WEBHOOK_URL")
    DISCORD_TIMEOUT = env_int("DISCORD_TIMEOUT", 10)
    DISCORD_RETRY_SECONDS = env_int("DISCORD_RETRY_SECONDS", 30)
    DISCORD_MAX_RETRIES = env_int("DISCORD_MAX_RETRIES", 12)
    # Webhooks of your own (comma-separated URLs), each post signed with WEBHOOK_SECRET.
    WEBHOOK_URLS = env_list("WEBHOOK_URLS", ())
    WEBHOOK_SECRET = env_str("WEBHOOK_SECRET")
    WEBHOOK_TIMEOUT = env_int("WEBHOOK_TIMEOUT", 10)
    # How many changed definitions a webhook's body carries (the rest: the change-log API).
    WEBHOOK_CHANGES_LISTED = env_int("WEBHOOK_CHANGES_LISTED", 20)
    WEBHOOK_RETRY_SECONDS = env_int("WEBHOOK_RETRY_SECONDS", 30)
    WEBHOOK_MAX_RETRIES = env_int("WEBHOOK_MAX_RETRIES", 12)
    # What each destination hears about: tables, and kinds of change (added, removed, changed,
    # unclassified, reclassified); comma-separated, empty: all.
    SLACK_TABLES = env_list("SLACK_TABLES", ())
    SLACK_KINDS = env_list("SLACK_KINDS", ())
    DISCORD_TABLES = env_list("DISCORD_TABLES", ())
    DISCORD_KINDS = env_list("DISCORD_KINDS", ())
    WEBHOOK_TABLES = env_list("WEBHOOK_TABLES", ())
    WEBHOOK_KINDS = env_list("WEBHOOK_KINDS", ())
    # Who hears that syncing is failing or recovered: destinations (slack, discord, webhook:<id>)
    # or kinds of them (webhook: every webhook), comma-separated.
    ALERTS_TO = env_list("ALERTS_TO", ("slack",))

    # Who may trigger syncs: one admin account for the pages, a bearer token for the API.
    ADMIN_USERNAME = env_str("ADMIN_USERNAME", "admin")
    ADMIN_PASSWORD = env_str("ADMIN_PASSWORD")
    ADMIN_PASSWORD_HASH = env_str("ADMIN_PASSWORD_HASH")
    API_TOKEN = env_str("API_TOKEN")
    # Per client: at most COUNT triggers (or sign-in attempts) in WINDOW seconds.
    TRIGGER_RATE_LIMIT = env_int("TRIGGER_RATE_LIMIT", 10)
    LOGIN_RATE_LIMIT = env_int("LOGIN_RATE_LIMIT", 5)
    # Sign-in attempts per account name in WINDOW seconds, from all clients together.
    LOGIN_ACCOUNT_RATE_LIMIT = env_int("LOGIN_ACCOUNT_RATE_LIMIT", 20)
    RATE_LIMIT_WINDOW = env_int("RATE_LIMIT_WINDOW", 60)
    # Behind a proxy (Heroku's router, nginx): how many hops of X-Forwarded-* to trust.
    PROXY_FIX_HOPS = env_int("PROXY_FIX_HOPS", 0)
    # Strict-Transport-Security: browsers keep to HTTPS this many seconds; 0 sends none.
    HSTS_MAX_AGE = env_int("HSTS_MAX_AGE", 0)
    # Fixed (FIXED_SETTINGS): scripts cannot read the session cookie, cross-site posts lack it.
    SESSION_COOKIE_HTTPONLY = True
    SESSION_COOKIE_SAMESITE = "Lax"
    # The session is signed again only when it changes, not on every page.
    SESSION_REFRESH_EACH_REQUEST = env_bool("SESSION_REFRESH_EACH_REQUEST", False)
    MAX_CONTENT_LENGTH = env_int("MAX_CONTENT_LENGTH", 64 * 1024)

    # Bungie. The demo origin (`manage.py demo-origin`) answers on this default address.
    BUNGIE_BASE_URL = env_str("BUNGIE_BASE_URL", "http://127.0.0.1:8765")
    BUNGIE_API_KEY = env_str("BUNGIE_API_KEY")
    BUNGIE_CONNECT_TIMEOUT = env_float("BUNGIE_CONNECT_TIMEOUT", 5.0)
    BUNGIE_READ_TIMEOUT = env_float("BUNGIE_READ_TIMEOUT", 30.0)
    BUNGIE_RETRIES = env_int("BUNGIE_RETRIES", 3)
    BUNGIE_BACKOFF_SECONDS = env_float("BUNGIE_BACKOFF_SECONDS", 0.5)
    # A Retry-After longer than this is not slept through: the sync reports "unavailable".
    BUNGIE_MAX_RETRY_WAIT = env_float("BUNGIE_MAX_RETRY_WAIT", 30.0)

    # The manifest cache.
    MANIFEST_KEY_PREFIX = env_str("MANIFEST_KEY_PREFIX", "manifest")
    MANIFEST_TABLES = env_list("MANIFEST_TABLES", DEFAULT_TABLES)
    MANIFEST_LANGUAGES = env_list("MANIFEST_LANGUAGES", ("en",))
    MANIFEST_FORMAT = env_str("MANIFEST_FORMAT", "json")
    MANIFEST_MAX_BYTES = env_int("MANIFEST_MAX_BYTES", 512 * 1024 * 1024)
    # Seconds a content file may take to download (and be ingested: a JSON table is ingested as
    # it comes), and one table of the SQLite database to be read.
    MANIFEST_DOWNLOAD_DEADLINE = env_float("MANIFEST_DOWNLOAD_DEADLINE", 600.0)
    MANIFEST_LOCK_TIMEOUT = env_float("MANIFEST_LOCK_TIMEOUT", 120.0)
    MANIFEST_HISTORY_LENGTH = env_int("MANIFEST_HISTORY_LENGTH", 100)
    # A table that comes back with fewer entries than this share of the live one fails the sync.
    MANIFEST_MIN_TABLE_RATIO = env_float("MANIFEST_MIN_TABLE_RATIO", 0.5)
    # Field paths (dotted, from the top of a definition) whose changes are noise, not change.
    MANIFEST_DIFF_IGNORE = env_list("MANIFEST_DIFF_IGNORE", ("index",))
    # The most a release's change log may take in Redis; what is past it is counted, not kept.
    MANIFEST_CHANGES_MAX_BYTES = env_int("MANIFEST_CHANGES_MAX_BYTES", 512 * 1024)
    MANIFEST_POLL_SECONDS = env_int("MANIFEST_POLL_SECONDS", 300)
    # Readers keep the live release id in memory and Redis says when it moves (CLIENT TRACKING,
    # Redis 6+); off, or where the server cannot track, each read asks for it with its data.
    MANIFEST_TRACK_LIVE = env_bool("MANIFEST_TRACK_LIVE", True)
    # Player profiles from Bungie are kept this long, so a reload does not ask again.
    PROFILE_CACHE_SECONDS = env_int("PROFILE_CACHE_SECONDS", 60)
    # Bungie's "no such player" (and "private profile") answers are kept this long.
    PLAYER_NOT_FOUND_SECONDS = env_int("PLAYER_NOT_FOUND_SECONDS", 30)
    # A player page waits this long for Bungie: well inside gunicorn's and Heroku's 30 s.
    PLAYER_READ_TIMEOUT = env_float("PLAYER_READ_TIMEOUT", 10.0)
    # Calls to Bungie the player pages may make: per client per RATE_LIMIT_WINDOW, and from all
    # clients together per PLAYER_BUDGET_WINDOW seconds, well below Bungie's limit per key so
    # that syncs always have room (docs/DECISIONS.md).
    PLAYER_RATE_LIMIT = env_int("PLAYER_RATE_LIMIT", 20)
    PLAYER_BUDGET = env_int("PLAYER_BUDGET", 100)
    PLAYER_BUDGET_WINDOW = env_int("PLAYER_BUDGET_WINDOW", 10)


# The secrets production requires, and the development defaults of each (public: they are here).
SECRET_NAMES = ("SECRET_KEY", "BUNGIE_API_KEY", "ADMIN_PASSWORD", "API_TOKEN")
DEVELOPMENT_SECRETS = {
    "SECRET_KEY": "dev-only-secret-key",
    "BUNGIE_API_KEY": "demo-key",
    "ADMIN_PASSWORD": "dev",
    "API_TOKEN": "dev-api-token",
    "WEBHOOK_SECRET": "dev-webhook-secret",
}
# Secrets production requires only with what they sign: WEBHOOK_SECRET with WEBHOOK_URLS.
CONDITIONAL_SECRETS = {"WEBHOOK_SECRET": "WEBHOOK_URLS"}
# Secrets that may be left unset (METRICS_TOKEN: /metrics open); set, production checks them.
OPTIONAL_SECRETS = ("METRICS_TOKEN",)


class DevelopmentConfig(Config):
    """`make dev`: embedded defaults, nothing to configure."""

    DEBUG = True
    SECRET_KEY = Config.SECRET_KEY or DEVELOPMENT_SECRETS["SECRET_KEY"]
    BUNGIE_API_KEY = Config.BUNGIE_API_KEY or DEVELOPMENT_SECRETS["BUNGIE_API_KEY"]
    ADMIN_PASSWORD = Config.ADMIN_PASSWORD or DEVELOPMENT_SECRETS["ADMIN_PASSWORD"]
    API_TOKEN = Config.API_TOKEN or DEVELOPMENT_SECRETS["API_TOKEN"]
    WEBHOOK_SECRET = Config.WEBHOOK_SECRET or DEVELOPMENT_SECRETS["WEBHOOK_SECRET"]
    SERVER_NAME = Config.SERVER_NAME or "127.0.0.1:5000"


class TestingConfig(Config):
    """The test suite: a real Redis, the demo origin, fast retries."""

    TESTING = True
    SECRET_KEY = "test-secret-key"  # noqa: S105 - only ever used by the test suite
    REDIS_URL = env_str("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    BUNGIE_API_KEY = "test-api-key"
    ADMIN_PASSWORD = "test-password"  # noqa: S105
    API_TOKEN = "test-api-token-0123456789"  # noqa: S105
    SERVER_NAME = "localhost"
    SLACK_WEBHOOK_URL = None
    SLACK_BOT_TOKEN = None
    SLACK_RETRY_SECONDS = 1
    DISCORD_WEBHOOK_URL = None
    DISCORD_RETRY_SECONDS = 1
    WEBHOOK_URLS: tuple[str, ...] = ()
    WEBHOOK_SECRET = "test-webhook-secret-0123456789"  # noqa: S105
    WEBHOOK_RETRY_SECONDS = 1
    BUNGIE_BACKOFF_SECONDS = 0.01
    BUNGIE_MAX_RETRY_WAIT = 1.0
    MANIFEST_DOWNLOAD_DEADLINE = 30.0


# The placeholders of .env.example.
EXAMPLE_SECRETS = (
    "change-me",
    "change-me-to-a-long-random-string",
    "change-me-to-a-long-random-token",
    "your-bungie-api-key",
)
# Secret values anyone can read (.env.example, the development and testing configurations),
# taken from where they are set so the list cannot fall behind: production refuses them.
# TestingConfig's own values only (vars), never one the environment gave Config.
PUBLIC_SECRETS = frozenset(
    value.strip().lower()
    for value in (
        *EXAMPLE_SECRETS,
        *DEVELOPMENT_SECRETS.values(),
        *(
            vars(TestingConfig).get(name)
            for name in (*SECRET_NAMES, *CONDITIONAL_SECRETS, *OPTIONAL_SECRETS)
        ),
    )
    if value
)
# The fewest characters a secret of ours may have in production (Bungie's key is Bungie's).
SECRET_MIN_LENGTHS = {
    "SECRET_KEY": 24,
    "API_TOKEN": 24,
    "ADMIN_PASSWORD": 12,
    "WEBHOOK_SECRET": 24,
    "METRICS_TOKEN": 24,
}


class ProductionConfig(Config):
    """Production: secrets and addresses come from the environment only."""

    REDIS_URL = env_str("REDIS_URL")
    BUNGIE_BASE_URL = env_str("BUNGIE_BASE_URL", "https://www.bungie.net")
    PREFERRED_URL_SCHEME = env_str("PREFERRED_URL_SCHEME", "https")
    SESSION_COOKIE_SECURE = True  # fixed (FIXED_SETTINGS)
    HSTS_MAX_AGE = env_int("HSTS_MAX_AGE", 365 * 86400)

    @staticmethod
    def problems(settings: dict[str, Any]) -> list[str]:
        """Return each required setting that is missing, public or too short, by name only."""
        required = ["SECRET_KEY", "BUNGIE_API_KEY", "API_TOKEN"]
        if not settings.get("REDIS_SENTINEL_URLS"):
            required.insert(0, "REDIS_URL")
        if not settings.get("ADMIN_PASSWORD_HASH"):
            required.append("ADMIN_PASSWORD")
        required += [
            name for name, needed_by in CONDITIONAL_SECRETS.items() if settings.get(needed_by)
        ]
        required += [name for name in OPTIONAL_SECRETS if settings.get(name)]
        found = []
        for name in required:
            value = settings.get(name)
            if not value and name in CONDITIONAL_SECRETS:
                found.append(f"{name} (with {CONDITIONAL_SECRETS[name]})")
            elif not value:
                found.append(name if name != "ADMIN_PASSWORD" else f"{name} (or {name}_HASH)")
            elif value.strip().lower() in PUBLIC_SECRETS:
                found.append(f"{name} (not an example, development or test value)")
            elif len(value) < SECRET_MIN_LENGTHS.get(name, 0):
                found.append(f"{name} (at least {SECRET_MIN_LENGTHS[name]} characters)")
        posts = ("SLACK_WEBHOOK_URL", "SLACK_BOT_TOKEN", "DISCORD_WEBHOOK_URL", "WEBHOOK_URLS")
        if any(settings.get(name) for name in posts) and not settings.get("SERVER_NAME"):
            found.append("SERVER_NAME (the host of the links in release messages)")
        return found


CONFIGS: dict[str, type[Config]] = {
    "development": DevelopmentConfig,
    "testing": TestingConfig,
    "production": ProductionConfig,
}


def get_config(name: str | None = None) -> type[Config]:
    """Return the configuration class for `name`, else for FLASK_CONFIG, else the default.

    The default is production, so that a deploy that forgets FLASK_CONFIG never runs on the
    development secrets; debug mode asked of the flask command (`flask run --debug`) picks
    development. `manage.py dev` and the tests name theirs.
    """
    name = name or env_str("FLASK_CONFIG") or default_config_name()
    try:
        return CONFIGS[name]
    except KeyError:
        known = ", ".join(CONFIGS)
        raise ValueError(f"Unknown FLASK_CONFIG {name!r}: choose one of {known}") from None


def default_config_name() -> str:
    """Return "development" in debug mode under the flask command line, else "production"."""
    # Flask's own reading of FLASK_DEBUG; FLASK_RUN_FROM_CLI is set by the flask command (and
    # manage.py), never by gunicorn or Celery, so a stray FLASK_DEBUG on a server changes nothing.
    debug = (env_str("FLASK_DEBUG") or "0").lower() not in ("0", "false", "no")
    from_cli = env_str("FLASK_RUN_FROM_CLI") == "true"
    return "development" if debug and from_cli else "production"


class ConfigurationError(RuntimeError):
    """The configuration cannot work; the message says what to set."""


def check(settings: dict[str, Any], config: type[Config]) -> None:
    """Refuse to start with one message naming every setting that is missing or unfit.

    The message names settings, never their values: it ends up in logs.
    """
    if settings.get("LOG_FORMAT") not in LOG_FORMATS:
        raise ConfigurationError(f"LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}")
    sentinels, master = settings.get("REDIS_SENTINEL_URLS"), settings.get("REDIS_SENTINEL_MASTER")
    if bool(sentinels) != bool(master):
        raise ConfigurationError(
            "REDIS_SENTINEL_URLS and REDIS_SENTINEL_MASTER go together: set both, or neither"
        )
    if sentinels:
        sentinel_addresses(sentinels)  # refuses a malformed address
    problems: list[str] = getattr(config, "problems", lambda _: [])(settings)
    if problems:
        raise ConfigurationError(
            f"{config.__name__} needs these settings in the environment: {', '.join(problems)}. "
            "To run on development defaults instead: make dev, or flask --app app run --debug."
        )


def redis_ssl_options(url: str | None, cert_reqs: str | None) -> dict[str, Any]:
    """Return the TLS options for a rediss:// URL (redis-py and Celery take the same)."""
    if not url or not url.startswith("rediss://"):
        return {}
    levels = {"required": ssl.CERT_REQUIRED, "optional": ssl.CERT_OPTIONAL, "none": ssl.CERT_NONE}
    try:
        return {"ssl_cert_reqs": levels[(cert_reqs or "required").lower()]}
    except KeyError:
        raise ConfigurationError(
            f"REDIS_SSL_CERT_REQS must be one of {', '.join(levels)}, got {cert_reqs!r}"
        ) from None


LOG_FORMATS = ("text", "json")


@dataclass(frozen=True)
class SentinelAddresses:
    """REDIS_SENTINEL_URLS, read: where the sentinels answer, and the Redis server's
    password and database (the same on the primary and its replicas)."""

    hosts: tuple[tuple[str, int], ...]
    password: str | None
    db: int


def sentinel_addresses(urls: tuple[str, ...] | str) -> SentinelAddresses:
    """Read REDIS_SENTINEL_URLS (a tuple, or the comma-separated text); a malformed address is
    refused by its position, never its text (it may hold a password)."""
    # Text (an override given as one string) is split, never read character by character.
    urls = as_list(urls) if isinstance(urls, str) else urls
    hosts: list[tuple[str, int]] = []
    passwords: set[str] = set()
    dbs: set[int] = set()
    for position, url in enumerate(urls, start=1):
        parsed = urlsplit(url if "://" in url else f"sentinel://{url}")
        try:
            port = parsed.port or 26379
        except ValueError:
            port = -1
        if parsed.scheme != "sentinel" or not parsed.hostname or port < 1:
            raise ConfigurationError(
                f"REDIS_SENTINEL_URLS: address {position} is not sentinel://[:password@]host:port"
            )
        path = parsed.path.strip("/")
        if path and not path.isdigit():
            raise ConfigurationError(f"REDIS_SENTINEL_URLS: address {position} has no db number")
        hosts.append((parsed.hostname, port))
        # The password and db are the Redis server's: one server (whichever is primary), so
        # addresses that disagree are a mistake, not a choice. Unset on one: the others'.
        if parsed.password:
            passwords.add(unquote(parsed.password))
        if path:
            dbs.add(int(path))
        if len(passwords) > 1 or len(dbs) > 1:
            raise ConfigurationError(
                f"REDIS_SENTINEL_URLS: address {position} names another password or db than "
                "the addresses before it"
            )
    if not hosts:
        raise ConfigurationError("REDIS_SENTINEL_URLS names no address")
    password = next(iter(passwords), None)
    return SentinelAddresses(tuple(hosts), password, next(iter(dbs), 0))


def celery_sentinel_url(urls: tuple[str, ...] | str) -> str:
    """Return the sentinels as one Celery sentinel:// URL (kombu's `;`-separated list)."""
    addresses = sentinel_addresses(urls)
    auth = f":{quote(addresses.password, safe='')}@" if addresses.password else ""
    return ";".join(
        f"sentinel://{auth}{f'[{host}]' if ':' in host else host}:{port}/{addresses.db}"
        for host, port in addresses.hosts
    )


def celery_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """Return Celery's configuration, derived from the flat settings above."""
    sentinels = settings.get("REDIS_SENTINEL_URLS")
    redis_url = celery_sentinel_url(sentinels) if sentinels else settings["REDIS_URL"]
    # kombu's and Celery's sentinel:// transports ask the sentinels for this primary.
    sentinel_options: dict[str, Any] = {}
    if sentinels:
        sentinel_options["master_name"] = settings["REDIS_SENTINEL_MASTER"]
        # Given at all, these replace what the sentinels' connections would take from the
        # Redis ones: the timeouts too, so a sentinel that does not answer cannot hang a trigger.
        sentinel_options["sentinel_kwargs"] = {
            "socket_timeout": 5,
            "socket_connect_timeout": 3,
            **(
                {"password": settings["REDIS_SENTINEL_PASSWORD"]}
                if settings.get("REDIS_SENTINEL_PASSWORD")
                else {}
            ),
        }
    broker = settings.get("CELERY_BROKER_URL") or redis_url
    backend = settings.get("CELERY_RESULT_BACKEND") or redis_url
    queue = settings["CELERY_QUEUE"]
    hard_limit = settings["SYNC_TIME_LIMIT"]
    poll = settings["MANIFEST_POLL_SECONDS"]
    tls = redis_ssl_options(broker, settings["REDIS_SSL_CERT_REQS"])
    backend_tls = redis_ssl_options(backend, settings["REDIS_SSL_CERT_REQS"])
    return {
        "broker_url": broker,
        "result_backend": backend,
        "broker_use_ssl": tls or None,
        "redis_backend_use_ssl": backend_tls or None,
        "broker_connection_retry_on_startup": True,
        # A trigger must fail fast (503) when the broker is down, not hang the request.
        "broker_connection_timeout": 3,
        "task_publish_retry_policy": {"max_retries": 2, "interval_start": 0, "interval_step": 0.5},
        # An unacknowledged task is redelivered after this: longer than the longest task.
        "broker_transport_options": {
            "visibility_timeout": hard_limit * 3,
            # A broker that accepts connections but does not answer must not hang a trigger
            # (Redis transport; RabbitMQ ignores these).
            "socket_timeout": 5,
            "socket_connect_timeout": 3,
            **sentinel_options,
        },
        "result_backend_transport_options": sentinel_options,
        "result_expires": settings["TASK_RESULT_SECONDS"],
        # A result backend that hangs must not hang the task status API.
        "redis_socket_timeout": 5,
        "redis_socket_connect_timeout": 5,
        "task_ignore_result": True,
        "task_default_queue": queue,
        "task_serializer": "json",
        "accept_content": ["json"],
        "worker_prefetch_multiplier": 1,
        "worker_hijack_root_logger": False,
        "imports": ["app.tasks"],
        "beat_schedule_filename": settings["CELERY_BEAT_SCHEDULE_FILE"],
        "beat_schedule": {
            "sync-manifest": {
                "task": "manifest.sync",
                "schedule": float(poll),
                "kwargs": {"trigger": "beat"},
                # A poll nobody ran before the next one is due is dropped, not piled up.
                "options": {"expires": poll * 0.9},
            }
        },
    }


def settings_dict(config: type[Config]) -> dict[str, Any]:
    """Return the upper-case settings of a configuration class as a plain mapping."""
    return {key: getattr(config, key) for key in dir(config) if key.isupper()}


def effective_settings(config: type[Config]) -> dict[str, Any]:
    """Return the settings of `config` as the app gets them: FLASK_<NAME> wins over <NAME>."""
    return {**settings_dict(config), **prefixed_settings(config)}


def prefixed_settings(config: type[Config]) -> dict[str, Any]:
    """Return the settings of `config` set as FLASK_<NAME>, each read and checked as <NAME> is.

    A setting's default says how its text reads: a switch, a whole number, a number, a list
    separated by commas, else text. Other FLASK_ variables are the
    flask command's (FLASK_APP, FLASK_RUN_PORT, ...), not settings; FIXED_SETTINGS are read
    from no variable.
    """
    found = {}
    for name, default in settings_dict(config).items():
        if name in FIXED_SETTINGS:
            continue
        variable = f"{ENV_PREFIX}{name}"
        value = env_str(variable)
        if value is not None:
            found[name] = read_like(variable, value, default)
    return found


def read_like(name: str, value: str, default: Any) -> Any:
    """Read the text `value` of the variable `name` as the type of its setting's `default`."""
    if isinstance(default, bool):  # before int: a bool is an int
        return as_bool(name, value)
    if isinstance(default, int):
        return as_int(name, value)
    if isinstance(default, float):
        return as_float(name, value)
    if isinstance(default, tuple):
        return as_list(value)
    return value
