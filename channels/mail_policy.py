"""The email policy Guichet parses and builds mail with: policy.default, its header classes kept."""

from __future__ import annotations

import email.policy
from email.headerregistry import HeaderRegistry


class CachingHeaderRegistry(HeaderRegistry):
    """The stock registry, except that the class it makes for each header name is kept.

    The standard library builds a new class (``type(...)``) for every header it parses or
    sets; that was a tenth of an acknowledgement's delivery (ten headers set) and a good part
    of reading a message's headers. The classes hold no state, so one per name serves all.
    """

    def __init__(self) -> None:
        super().__init__()
        self._classes: dict[str, type] = {}

    def map_to_type(self, name: str, cls: type) -> None:
        super().map_to_type(name, cls)
        self._classes.pop(name.lower(), None)

    def __getitem__(self, name: str) -> type:
        key = name.lower()
        made = self._classes.get(key)
        if made is None:
            made = self._classes[key] = super().__getitem__(name)
        return made


#: policy.default with the caching registry: same parsing, same output.
DEFAULT = email.policy.default.clone(header_factory=CachingHeaderRegistry())
