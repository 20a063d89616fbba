"""Audit log lines turned back into the requests they record, for `bailiwick policy diff --audit`.

Each line of an audit log (docs/operations.md, "Audit log") is read as the
one record type the proxy writes (`proxy.audit.record.AuditRecord`), and the
request it records is rebuilt from the record's fields (`rebuild`), to be
decided again with the settings the operator gives (the proxy's region, what
it does with unmatched resources) and, as the proxy decided it, where the
caller was seen from (``caller.location``, recorded with `identity.geoip`; a
line without it is decided with no location, as the proxy without GeoIP
decides). Identical requests are grouped, with a count (`AuditReader`).

Lines that are not decisions (checkpoints, anything else) and decisions that
cannot be turned back into a request are skipped and counted by reason, never
guessed: a request refused before the caller was identified or before it was
read has no caller or no resource; a copy refused at its source records the
source, not the destination; a multi-object delete records only the key that
decided. A decision line that is not a whole record is unreadable: no part
of it is trusted.

Pure: the caller opens the files and passes their lines.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from proxy.audit.record import AuditOutcome, AuditRecord, RecordedRequest
from proxy.domain import Access, AccessRequest, Action, Resource
from proxy.policy.samples import Sample, Settings, Source, Subject

# Why an audit line was skipped (the keys of `AuditReader.skipped`).
SKIP_NOT_JSON = "not a JSON object"
SKIP_NOT_DECISION = "not a decision"
SKIP_NO_CALLER = "no caller jurisdiction"
SKIP_NO_REQUEST = "no request resource"
SKIP_UNREADABLE = "unreadable request"
SKIP_COPY_SOURCE = "copy refused at its source"
SKIP_SEVERAL = "several resources"

# The audit log's "decision" values (docs/operations.md): a line with one is a decision line, anything else
# (a checkpoint) is not. "error" lines were decided (and allowed) before the storage server failed, or were
# refused without a policy; either way the request can be decided again.
RECORDED_DECISIONS = frozenset(o.value for o in AuditOutcome)

# For lines written before the audit log recorded ``request.listing``, the fallback guess (`_listing`):
# S3 operations whose access is a listing (proxy/s3/operations.py, Scope.PREFIX): the key is a prefix and
# every dataset nested under it is reached. Bucket-level admin operations (Scope.WHOLE_BUCKET) reach the
# whole bucket too; they are recognised by their action and key (see `_listing`). The tests hold this
# list to the operations table.
LISTING_OPERATIONS = frozenset({"ListObjects", "ListObjectsV2", "ListObjectVersions", "ListMultipartUploads"})

_MULTI_DELETE = "DeleteObjects"
_SCHEMES = ("s3", "azure")


@dataclass(frozen=True, slots=True)
class AuditSummary:
    """What the audit files held: lines read, decisions rebuilt, lines skipped by reason."""

    files: tuple[str, ...] = ()
    lines: int = 0
    decisions: int = 0
    skipped: Mapping[str, int] = field(default_factory=dict)

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())


def resource_from_audit(text: str) -> Resource:
    """The `Resource` whose text (``str(resource)``) the audit log recorded.

    The exact inverse of `Resource.__str__`, rather than the policy tests'
    `parse_resource`: the proxy records the keys it was sent, and a key may
    hold characters (such as ``*``) that a test's resource refuses as a likely
    typo. Raises `ValueError` for text that is not ``s3://`` or ``azure://``.
    """
    for scheme in _SCHEMES:
        marker = f"{scheme}://"
        if text.startswith(marker):
            bucket, _, key = text[len(marker):].partition("/")
            return Resource(scheme, bucket, key)
    raise ValueError(f'"{text}" is not an s3:// or azure:// resource')


def read_record(line: bytes | str) -> AuditRecord | str:
    """The decision an audit line records (`AuditRecord.from_dict`), or why it is skipped.

    The reason is `SKIP_NOT_JSON` (not text, not JSON, or not an object),
    `SKIP_NOT_DECISION` (a checkpoint, or any line whose ``decision`` is not
    one the proxy records) or `SKIP_UNREADABLE`: a decision line that is not
    a whole audit record (a field missing or of the wrong type, an unknown
    action) is not trusted in part, whatever else it lacks. A field it does
    not know, written by a newer proxy, is ignored.
    """
    try:
        fields: object = json.loads(line)
    except ValueError:  # also bytes that are not UTF-8 (UnicodeDecodeError)
        return SKIP_NOT_JSON
    if not isinstance(fields, dict):
        return SKIP_NOT_JSON
    try:
        return AuditRecord.from_dict(fields)
    except ValueError:
        # The record cannot say which lines are not decisions at all: the line's own ``decision`` does.
        decision = fields.get("decision")
        return SKIP_UNREADABLE if isinstance(decision, str) and decision in RECORDED_DECISIONS else SKIP_NOT_DECISION


def rebuild(record: AuditRecord) -> tuple[str, AccessRequest] | str:
    """The caller's jurisdiction and the request an audit record holds, or why it cannot be rebuilt.

    The record names the access that decided (``request.action``,
    ``request.resource``), whether it was a listing (``request.listing``) and
    the source of a copy (``request.copy_from``). The reason returned is one
    of the ``SKIP_*`` constants.
    """
    jurisdiction = record.caller.jurisdiction
    if not jurisdiction:
        return SKIP_NO_CALLER
    request = record.request
    action = request.action
    if action is None or request.resource is None:
        return SKIP_NO_REQUEST
    if request.resources > 1:
        return SKIP_SEVERAL
    try:
        resource = resource_from_audit(request.resource)
        copy_from = resource_from_audit(request.copy_from) if request.copy_from is not None else None
    except ValueError:
        return SKIP_UNREADABLE
    if request.operation == _MULTI_DELETE and not resource.key:
        # Refused before its body was read: the keys it would delete were never known.
        return SKIP_NO_REQUEST
    if copy_from is not None and action is not Action.WRITE:
        # Refused at the copy source: the line holds the source's read, and the destination is not recorded.
        return SKIP_COPY_SOURCE
    listing = _listing(request, action, resource)
    return jurisdiction, AccessRequest((Access(action, resource, listing=listing),), copy_from=copy_from)


def rebuild_line(line: bytes | str) -> tuple[str, AccessRequest] | str:
    """`rebuild` of the record `line` holds, or why the line is skipped (`read_record`'s reasons too)."""
    record = read_record(line)
    return record if isinstance(record, str) else rebuild(record)


def _listing(request: RecordedRequest, action: Action, resource: Resource) -> bool:
    """Whether the recorded access is a listing (its key a prefix): as the line says it (``request.listing``).

    Lines written before the proxy recorded it are read as the S3 request
    reader decides, from the S3 operation; other storage APIs' operations are
    then read as no listing.
    """
    if request.listing is not None:
        return request.listing
    # Bucket configuration governs every key in the bucket, so it reaches every dataset nested in it.
    whole_bucket = action is Action.ADMIN and bool(resource.bucket) and not resource.key
    if request.operation is not None:
        return request.operation in LISTING_OPERATIONS or whole_bucket
    # No operation recorded: read a list action as a listing, the stricter reading (nested datasets count).
    return action is Action.LIST or whole_bucket


class AuditReader:
    """Rebuilds the requests of audit logs, grouping identical ones; give it each file's lines with `read`.

    Reads nothing itself: the caller opens the files and passes their lines
    (bytes or text), so a file that cannot be opened is the caller's error to
    report. Blank lines are ignored; every other line is either a decision
    counted in a sample or skipped with a reason.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.files: list[str] = []
        self.lines = 0
        self.decisions = 0
        self.skipped: Counter[str] = Counter()
        self._samples: dict[Subject, Sample] = {}

    def read(self, name: str, lines: Iterable[bytes | str]) -> None:
        """Take the lines of one audit file, shown as `name` in the report."""
        self.files.append(name)
        for number, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            self.lines += 1
            record = read_record(raw)
            if isinstance(record, str):
                self.skipped[record] += 1
                continue
            rebuilt = rebuild(record)
            if isinstance(rebuilt, str):
                self.skipped[rebuilt] += 1
                continue
            self.decisions += 1
            jurisdiction, request = rebuilt
            # The location the line records, passed to the engine as the proxy passed it (location-checked rules).
            subject = Subject(jurisdiction, request, self.settings, record.caller.location)
            seen = self._samples.get(subject)
            if seen is None:
                self._samples[subject] = Sample(subject, Source.AUDIT, name, number)
            else:
                self._samples[subject] = Sample(subject, Source.AUDIT, seen.file, seen.line, seen.count + 1)

    @property
    def samples(self) -> list[Sample]:
        """One sample per distinct request, with the number of lines that recorded it."""
        return list(self._samples.values())

    def summary(self) -> AuditSummary:
        return AuditSummary(tuple(self.files), self.lines, self.decisions, dict(sorted(self.skipped.items())))
