"""Streaming reader of the multipart submission body: file parts go straight to the upload area on disk.

Starlette's ``request.form()`` spools files to temporary storage before the handler runs, with no limit on
their total; this reader instead feeds the body through python-multipart chunk by chunk, so the size limit
stops an oversized upload as soon as it is crossed and nothing but the upload area ever holds the bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fastapi import Request
from python_multipart.multipart import MultipartParseError, MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect

from recon_service.storage import UploadArea, UploadWriter

TEXT_FIELDS = ("pipeline", "params", "study", "study_lookup")
FILE_FIELD = "file"
MAX_FIELD_BYTES = 64 * 1024
MAX_FILES = 32
FORM_OVERHEAD = 1 << 20  # headers and text fields on top of the file bytes


class FormError(Exception):
    """A body that is not an acceptable submission form; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, message: str):
        self.status, self.message = status, message
        super().__init__(message)


@dataclass
class _Part:
    headers: dict[str, bytes] = field(default_factory=dict)
    name: str = ""
    writer: UploadWriter | None = None
    text: bytearray | None = None


class FormReceiver:
    """Parses one submission; text fields end up in :attr:`fields`, files in the upload area."""

    def __init__(self, area: UploadArea):
        self.area = area
        self.fields: dict[str, str] = {}
        self.file_parts = 0
        self.ended = False
        self._events: list[tuple[str, bytes]] = []
        self._part: _Part | None = None
        self._header_field = b""
        self._header_value = b""

    # python-multipart callbacks only queue events; handling them outside the parser keeps errors simple
    def _callbacks(self) -> dict:
        def data(kind: str):
            return lambda buf, start, end: self._events.append((kind, bytes(buf[start:end])))

        def mark(kind: str):
            return lambda: self._events.append((kind, b""))

        return {"on_part_begin": mark("part_begin"), "on_header_field": data("header_field"),
                "on_header_value": data("header_value"), "on_header_end": mark("header_end"),
                "on_headers_finished": mark("headers_finished"), "on_part_data": data("part_data"),
                "on_part_end": mark("part_end"), "on_end": mark("end")}

    async def receive(self, request: Request) -> None:
        content_type, options = parse_options_header(request.headers.get("content-type"))
        if content_type != b"multipart/form-data" or not options.get(b"boundary"):
            raise FormError(415, "the body must be multipart/form-data with 'file' parts and a 'pipeline' field")
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.area.max_bytes + FORM_OVERHEAD:
            raise FormError(413, f"the request body ({int(declared) / 2**20:.1f} MiB) exceeds the limit of "
                                 f"{self.area.max_bytes / 2**20:g} MiB per submission")
        parser = MultipartParser(options[b"boundary"], self._callbacks())
        try:
            async for chunk in request.stream():
                if chunk:
                    parser.write(chunk)
                    self._handle_events()
            parser.finalize()
            self._handle_events()
        except MultipartParseError as err:
            raise FormError(400, f"malformed multipart body ({err})") from err
        except ClientDisconnect as err:
            raise FormError(400, "the client disconnected during the upload") from err
        finally:
            if self._part is not None and self._part.writer is not None:
                self._part.writer.abort()
        if not self.ended:
            raise FormError(400, "the multipart body ended before its closing boundary")

    def _handle_events(self) -> None:
        events, self._events = self._events, []
        for kind, data in events:
            getattr(self, f"_on_{kind}")(data)

    def _on_part_begin(self, _: bytes) -> None:
        self._part = _Part()

    def _on_header_field(self, data: bytes) -> None:
        self._header_field += data

    def _on_header_value(self, data: bytes) -> None:
        self._header_value += data

    def _on_header_end(self, _: bytes) -> None:
        assert self._part is not None
        self._part.headers[self._header_field.decode("latin-1").lower()] = self._header_value
        self._header_field = self._header_value = b""

    def _on_headers_finished(self, _: bytes) -> None:
        part = self._part
        assert part is not None
        try:  # header bytes as sent; names are decoded as UTF-8 below
            disposition, options = parse_options_header(part.headers.get("content-disposition"))
        except ValueError as err:
            raise FormError(400, f"unreadable Content-Disposition header in a multipart part ({err})") from err
        if disposition != b"form-data" or b"name" not in options:
            raise FormError(400, "a multipart part has no 'Content-Disposition: form-data; name=...' header")
        part.name = options[b"name"].decode("utf-8", errors="replace")
        filename = options.get(b"filename")
        if part.name == FILE_FIELD:
            self.file_parts += 1
            if self.file_parts > MAX_FILES:
                raise FormError(422, f"more than {MAX_FILES} file parts in one submission")
            name = filename.decode("utf-8", errors="replace") if filename is not None else ""
            part.writer = self.area.open(name)
        elif part.name in TEXT_FIELDS:
            if filename is not None:
                raise FormError(422, f"form field {part.name!r} must be a text field, not a file")
            if part.name in self.fields:
                raise FormError(422, f"form field {part.name!r} appears more than once")
            part.text = bytearray()
        else:
            raise FormError(422, f"unknown form field {part.name[:64]!r}; expected 'file' parts and the fields "
                                 f"{', '.join(repr(n) for n in TEXT_FIELDS)}")

    def _on_part_data(self, data: bytes) -> None:
        part = self._part
        assert part is not None
        if part.writer is not None:
            part.writer.write(data)
        elif part.text is not None:
            part.text += data
            if len(part.text) > MAX_FIELD_BYTES:
                raise FormError(422, f"form field {part.name!r} is longer than {MAX_FIELD_BYTES // 1024} KiB")

    def _on_part_end(self, _: bytes) -> None:
        part, self._part = self._part, None
        assert part is not None
        if part.writer is not None:
            self.area.add(part.writer.finish())
        elif part.text is not None:
            try:
                self.fields[part.name] = part.text.decode("utf-8")
            except UnicodeDecodeError as err:
                raise FormError(422, f"form field {part.name!r} is not UTF-8 text") from err

    def _on_end(self, _: bytes) -> None:
        self.ended = True
