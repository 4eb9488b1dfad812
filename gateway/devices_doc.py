"""devices.yaml as blocks of lines, one per device: an edit of a few devices at community
scale without reading or writing the whole file through ruamel's round trip.

Reading a 5,000-device devices.yaml through ruamel's round-trip parser takes seconds (it is
pure Python and gathers every comment), writing it again as long; an installer's save must
take well under a second. :class:`DevicesDoc` keeps the file's lines and where each
device's entry starts, made from a site that was validated from these very lines
(:meth:`DevicesDoc.of`). An edit parses and writes only the edited entries' blocks
(``devices:`` plus the block, through the same round-trip parser: comments inside an entry
are kept), and splices them into the lines.

Contract:

- :meth:`DevicesDoc.of` returns ``None`` for a file it does not segment with certainty
  (no top-level ``devices:`` block sequence, flow style, several documents, anchors or
  aliases, a block whose ``id`` is not the site's device at that place, a count that
  differs): the caller then edits the whole file, as before.
- :meth:`DevicesDoc.entry` parses one device's block alone and returns it only if it is
  that device as the site validated it (``Device`` equality); else ``None``.
- :meth:`DevicesDoc.block_of` writes an entry as a block in the file's indentation and
  returns it only if it reads back as that entry; else ``None``.
- A block's text depends on nothing outside it (block style, no anchors), so the file with
  one block replaced, removed or appended reads as the old file's entries with that one
  entry replaced, removed or appended: that is what the editor validates
  (``edge_config.loader.revalidate_devices``).
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap

from edge_config.loader import SiteConfig
from edge_config.loader import plain as _plain
from edge_config.schema import Device

__all__ = ["DevicesDoc"]

_TOP = re.compile(r"^devices:\s*(#.*)?$")
_ITEM = re.compile(r"^( *)-( +)\S")
_ANCHOR = re.compile(r"(^|[\s\[{,:-])[&*][^\s,\]}]|<<\s*:")


def _yaml(dash: int = 2, content: int = 4) -> YAML:
    y = YAML(typ="rt")
    y.width = 120
    y.allow_unicode = True
    y.preserve_quotes = True
    y.indent(mapping=2, sequence=content, offset=dash)
    return y


def _scalar(text: str) -> str:
    text = re.sub(r"\s+#.*$", "", text).strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        text = text[1:-1]
    return text


@dataclass
class DevicesDoc:
    """The lines of devices.yaml and the first line of each device's block (see module)."""

    lines: list[str]
    starts: list[int]        #: first line of each device's block, in the file's order
    end: int                 #: the line after the devices sequence
    dash: int                #: column of the entries' ``-``
    content: int             #: column of their keys

    @classmethod
    def of(cls, text: str, site: SiteConfig) -> DevicesDoc | None:
        """Segment ``text`` (devices.yaml of ``site``, as read); ``None`` when unsure."""
        lines = text.splitlines(keepends=True)
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += "\n"
        if _ANCHOR.search(text) or any(ln.startswith(("---", "...", "%")) for ln in lines):
            return None
        tops = [i for i, ln in enumerate(lines) if _TOP.match(ln)]
        if len(tops) != 1:
            return None
        first = next((i for i in range(tops[0] + 1, len(lines))
                      if lines[i].strip() and not lines[i].lstrip().startswith("#")), None)
        devices = site.devices.devices
        if first is None or (m := _ITEM.match(lines[first])) is None:
            return None
        dash, content = len(m[1]), len(m[1]) + 1 + len(m[2])
        starts: list[int] = []
        end = len(lines)
        for i in range(first, len(lines)):
            ln = lines[i]
            if not ln.strip() or ln.lstrip().startswith("#"):
                continue
            indent = len(ln) - len(ln.lstrip(" "))
            if indent == dash and _ITEM.match(ln):
                starts.append(i)
            elif indent <= dash:
                if indent == 0 and not ln.startswith("-"):
                    end = i
                    break
                return None          # something at the entries' column that is not one
        if len(starts) != len(devices):
            return None
        doc = cls(lines, starts, end, dash, content)
        key = re.compile(r"^ {%d}id:(.*)$" % content)
        first_key = re.compile(r"^ {%d}- +id:(.*)$" % dash)
        for k, d in enumerate(devices):
            block = doc.block(k)
            m0 = first_key.match(block[0])
            found = m0[1] if m0 else next((m1[1] for ln in block[1:]
                                           if (m1 := key.match(ln))), None)
            if found is None or _scalar(found) != d.id:
                return None
        return doc

    # -- blocks ------------------------------------------------------------------------
    def block(self, k: int) -> list[str]:
        """The lines of the ``k``-th device's block (its trailing comments included)."""
        stop = self.starts[k + 1] if k + 1 < len(self.starts) else self.end
        return self.lines[self.starts[k]:stop]

    def entry(self, k: int, device: Device) -> CommentedMap | None:
        """The ``k``-th block as a round-trip mapping, if it is ``device`` (else None)."""
        entry = self._read("".join(self.block(k)))
        if entry is None:
            return None
        try:
            if Device.model_validate(_plain(entry)) != device:
                return None
        except ValueError:
            return None
        return entry

    def block_of(self, entry: dict) -> list[str] | None:
        """``entry`` written as a block of this file (None if it does not read back)."""
        buf = io.StringIO()
        _yaml(self.dash, self.content).dump(CommentedMap([("devices", [entry])]), buf)
        text = buf.getvalue()
        head, _, body = text.partition("\n")
        if head.strip() != "devices:" or not body:
            return None
        back = self._read(body)
        if back is None or _plain(back) != _plain(entry):
            return None
        return body.splitlines(keepends=True)

    def read_block(self, block: list[str]) -> CommentedMap | None:
        """A block (from :meth:`block_of`) as its round-trip entry."""
        return self._read("".join(block))

    def _read(self, block: str) -> CommentedMap | None:
        try:
            tree = _yaml().load("devices:\n" + block)
        except Exception:      # noqa: BLE001 - a block that does not read alone: not ours
            return None
        if not isinstance(tree, dict) or list(tree) != ["devices"]:
            return None
        seq = tree["devices"]
        if not isinstance(seq, list) or len(seq) != 1 or not isinstance(seq[0], CommentedMap):
            return None
        return seq[0]

    # -- an edit -----------------------------------------------------------------------
    def spliced(self, blocks: list[list[str]]) -> DevicesDoc:
        """This file with its device blocks replaced by ``blocks`` (one per device, in
        order): the lines before the first and after the last stay."""
        head = self.lines[:self.starts[0]] if self.starts else self.lines[:self.end]
        tail = self.lines[self.end:]
        lines = list(head)
        starts = []
        for b in blocks:
            starts.append(len(lines))
            lines.extend(b)
        end = len(lines)
        lines.extend(tail)
        return DevicesDoc(lines, starts, end, self.dash, self.content)

    def blocks(self) -> list[list[str]]:
        lines, starts = self.lines, self.starts
        return [lines[a:b] for a, b in zip(starts, [*starts[1:], self.end])]

    def text(self) -> str:
        return "".join(self.lines)
