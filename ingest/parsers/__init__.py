"""File parsers. ``parse_bytes`` detects the format and returns a ``ParsedDocument`` or raises a ParseError."""

from kb_service.ingest.parsers.registry import SUPPORTED_EXTENSIONS, detect_format, parse_bytes, parse_file

__all__ = ["SUPPORTED_EXTENSIONS", "detect_format", "parse_bytes", "parse_file"]
