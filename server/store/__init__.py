"""The state store: records (``records``), SQLite access (``sqlite``) and the async repository the
service uses (``repository``, the only thread hop)."""

from server.store.records import TAIL_CHARS, BoxRecord, JobRecord
from server.store.repository import Repository
from server.store.sqlite import SCHEMA, Store

__all__ = ["SCHEMA", "TAIL_CHARS", "BoxRecord", "JobRecord", "Repository", "Store"]
