"""Where a release's tables come from: one JSON download per table, or, in the SQLite format, one
zipped database per language unpacked to disk; each table read as batches of whole entries.
"""

from __future__ import annotations

import tempfile
import zipfile
from collections.abc import Callable
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from app.manifest import errors
from app.manifest.client import BungieClient
from app.manifest.client import ContentDownload
from app.manifest.ingest import Batch
from app.manifest.ingest import count_sqlite_rows
from app.manifest.ingest import iter_json_table
from app.manifest.ingest import iter_sqlite_table
from app.manifest.outcome import IngestTracker
from app.manifest.release import SQLITE_FILE
from app.manifest.release import Release

UNPACK_BLOCK = 1024 * 1024


class TableSources:
    """The tables of a release, read as they download; the lock kept and progress told meanwhile."""

    def __init__(
        self,
        client: BungieClient,
        tracker: IngestTracker,
        keep_alive: Callable[[], None],
        *,
        blind_to_index: bool = True,
    ) -> None:
        self.client = client
        self.tracker = tracker
        self.keep_alive = keep_alive
        # Whether digests ignore the top-level `index` (MANIFEST_DIFF_IGNORE names it).
        self.blind_to_index = blind_to_index

    def tables(self, release: Release, lang: str) -> Iterator[tuple[str, Iterator[Batch]]]:
        """Yield each table of `release` in `lang` with its entries, a batch at a time.

        A table that cannot be read whole raises TableInvalid naming the table and language.
        """
        if release.format == "sqlite":
            return self._sqlite_tables(release, lang)
        return self._json_tables(release, lang)

    def _json_tables(self, release: Release, lang: str) -> Iterator[tuple[str, Iterator[Batch]]]:
        tracker = self.tracker
        for table in release.tables:
            tracker.entries, tracker.entries_total = 0, None
            tracker.report("downloading", lang, table)
            with self.client.download(release.paths[lang][table]) as download:
                tracker.download = download
                chunks = self._watched(download, lang, table)
                batches = iter_json_table(chunks, blind_to_index=self.blind_to_index)
                yield table, _named(batches, table, lang)
            tracker.download = None

    def _watched(self, download: ContentDownload, lang: str, table: str | None) -> Iterator[bytes]:
        """Pass the download's chunks on, keeping the lock and the progress up to date."""
        tracker = self.tracker
        for chunk in download:
            self.keep_alive()
            tracker.report("ingesting" if tracker.entries else "downloading", lang, table)
            yield chunk

    def _sqlite_tables(self, release: Release, lang: str) -> Iterator[tuple[str, Iterator[Batch]]]:
        tracker = self.tracker
        with tempfile.TemporaryDirectory(prefix="manifest-") as workdir:
            database = self._fetch_sqlite(release.paths[lang][SQLITE_FILE], lang, Path(workdir))
            # Each table is read in the time a content file may take to download.
            deadline = self.client.download_deadline
            for table in release.tables:
                total = count_sqlite_rows(database, table, deadline=deadline)
                tracker.entries, tracker.entries_total = 0, total
                batches = iter_sqlite_table(
                    database, table, deadline=deadline, blind_to_index=self.blind_to_index
                )
                yield table, _named(batches, table, lang)

    def _fetch_sqlite(self, path: str, lang: str, workdir: Path) -> str:
        """Download the zipped SQLite database to disk and unpack it; return the database path."""
        tracker = self.tracker
        tracker.report("downloading", lang, None)
        archive = workdir / "manifest.zip"
        with self.client.download(path) as download, archive.open("wb") as out:
            tracker.download = download
            for chunk in self._watched(download, lang, None):
                out.write(chunk)
        tracker.download = None
        try:
            with zipfile.ZipFile(archive) as bundle:
                members = [m for m in bundle.infolist() if not m.is_dir()]
                if len(members) != 1:
                    raise errors.TableInvalid(f"{path} should hold one SQLite file")
                member = members[0]
                database = workdir / "manifest.sqlite"
                with bundle.open(member) as source, database.open("wb") as target:
                    self._unpack(source, target, path)
        except zipfile.BadZipFile as exc:
            raise errors.TableInvalid(f"{path} is not a zip file: {exc}") from None
        archive.unlink()
        return str(database)

    def _unpack(self, source: IO[bytes], target: IO[bytes], path: str) -> None:
        # The sizes in a zip's directory are the sender's word: count what really comes out.
        written = 0
        while block := source.read(UNPACK_BLOCK):
            written += len(block)
            if written > self.client.max_bytes:
                raise errors.ContentTooLarge(f"{path} unpacks to over MANIFEST_MAX_BYTES")
            target.write(block)


def _named(batches: Iterator[Batch], table: str, lang: str) -> Iterator[Batch]:
    """Pass a table's batches on; a refusal names the table and language it is about."""
    try:
        yield from batches
    except errors.TableInvalid as exc:
        if str(exc).startswith(table):
            raise
        raise errors.TableInvalid(f"{table} ({lang}): {exc}") from None
