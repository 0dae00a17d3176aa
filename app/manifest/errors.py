"""Everything that can go wrong in a sync, as types: callers retry, give up or alert by type."""

from __future__ import annotations

# Names from Bungie's Exceptions.PlatformErrorCodes, for the codes this app treats specially.
SUCCESS = 1
SYSTEM_DISABLED = 5
THROTTLE_CODES = frozenset({31, 35, 36, 37, 51, 54, 55, 56, 57, 1672})
CONFIG_CODES = frozenset({2101, 2102, 2107})


class ManifestError(Exception):
    """Base of every sync error. `transient` errors are worth retrying as they are."""

    transient = False
    retry_after: float | None = None

    @property
    def kind(self) -> str:
        """Return the error's class name, the short form shown in history and pages."""
        return type(self).__name__


class BungieError(ManifestError):
    """Bungie answered with an error envelope this app has no special handling for."""

    def __init__(self, message: str, *, error_code: int | None = None, status: str = "") -> None:
        super().__init__(message)
        self.error_code = error_code
        self.error_status = status


class BungieUnavailable(BungieError):
    """Bungie cannot serve the manifest right now; try again after `retry_after` seconds."""

    transient = True

    def __init__(self, message: str, *, retry_after: float, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.retry_after = retry_after


class BungieMaintenance(BungieUnavailable):
    """ErrorCode 5 SystemDisabled: the API is down for maintenance."""


class BungieThrottled(BungieUnavailable):
    """A throttle code or HTTP 429: slow down for ThrottleSeconds / Retry-After."""


class BungieOutage(BungieUnavailable):
    """No usable answer: connection errors, 5xx, an HTML page or an OAuth-style error body."""


class BungieConfigError(BungieError):
    """The API key is missing, invalid or tied to another origin: retrying will not help."""


class ManifestConfigError(ManifestError):
    """This app's configuration asks for something the manifest does not have."""


class ContentError(ManifestError):
    """A content file could not be fetched safely."""


class UnsafeContentPath(ContentError):
    """A content path from Bungie's response is not a plain path under /common/destiny2_content/."""


class ContentRedirected(ContentError):
    """A content request answered with a redirect, which is never followed."""


class ContentTooLarge(ContentError):
    """A content file is larger than MANIFEST_MAX_BYTES."""


class ContentUnavailable(ContentError):
    """A content file could not be fetched completely this time; the next run retries it."""

    transient = True
    retry_after = 60.0


class ContentNotFound(ContentUnavailable):
    """A content file answered 404, also with a cache-busting query string."""


class ContentTruncated(ContentUnavailable):
    """A content file ended before its Content-Length."""


class DownloadDeadlineExceeded(ContentUnavailable):
    """A content download took longer than MANIFEST_DOWNLOAD_DEADLINE."""


class TableInvalid(ManifestError):
    """A table did not parse, or came back far smaller than the live one."""
