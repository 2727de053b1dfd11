"""VBA macros in Office files, found with oletools so that such files are never opened."""

from __future__ import annotations

import warnings

#: Office binary files (.doc, .xls, vbaProject.bin) are OLE compound files.
OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"


def has_vba_macros(content: bytes, filename: str) -> bool:
    """True when olevba finds a VBA project; a file it cannot parse counts as having none,
    since an Office file is never opened by Guichet either way.

    Only ever given OLE files: on a zip, olevba would inflate every member without limits
    (the caller unpacks OOXML packages in budget and passes their OLE parts).
    """
    with warnings.catch_warnings():
        # oletools calls pyparsing APIs that warn of their deprecation on import.
        warnings.simplefilter("ignore", DeprecationWarning)
        from oletools import olevba
    try:
        parser = olevba.VBA_Parser(filename, data=content)
    except Exception:
        return False
    try:
        return bool(parser.detect_vba_macros())
    except Exception:
        return False
    finally:
        parser.close()
