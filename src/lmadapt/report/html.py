"""A self-contained HTML page from the Markdown a compare report is written in: a small
converter for the subset `report.compare.markdown_report` writes (headings, paragraphs, emphasis,
code, lists, pipe tables, images), with images embedded as data URIs."""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

from lmadapt.utils import atomic_write_text

_INLINE = re.compile(
    r"`(?P<code>[^`]+)`"
    r"|\\(?P<escaped>[\\`*_{}\[\]()#+\-.!|<>])"
    r"|!\[(?P<alt>[^\]]*)\]\((?P<src>[^)\s]+)\)"
    r"|\[(?P<text>[^\]]+)\]\((?P<href>[^)\s]+)\)"
    r"|\*\*(?P<bold>.+?)\*\*"
    r"|\*(?P<em>[^*\s](?:[^*]*[^*\s])?)\*"
    r"|(?<!\w)_(?P<em2>[^_\s](?:[^_]*[^_\s])?)_(?!\w)")
_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
         ".svg": "image/svg+xml"}
_CSS = """body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; padding: 0 1em;
  line-height: 1.45; color: #222; }
table { border-collapse: collapse; font-size: 0.88em; margin: 1em 0; display: block; overflow-x: auto; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; white-space: nowrap; }
th { background: #f0f0f0; } tr:nth-child(even) td { background: #fafafa; }
code { background: #f3f3f3; padding: 0 0.2em; border-radius: 3px; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; } pre code { background: none; padding: 0; }
img { max-width: 100%; } blockquote { border-left: 4px solid #ddd; margin-left: 0; padding-left: 1em; color: #555; }"""


def _image(alt: str, src: str, folder: Path) -> str:
    """An image file in `folder` embedded as a data URI; a web address as a link; anything else
    (a missing file) as its alt text. The page never loads a file next to it."""
    file = folder / src
    if "/" not in src and "\\" not in src and file.suffix.lower() in _MIME and file.is_file():
        data = base64.b64encode(file.read_bytes()).decode("ascii")
        return f'<img alt="{html.escape(alt)}" src="data:{_MIME[file.suffix.lower()]};base64,{data}">'
    if re.match(r"^https?://", src):
        return f'<a href="{html.escape(src)}">{html.escape(alt or src)}</a>'
    return f"<em>[{html.escape(alt or src)}: image not found]</em>"


def _inline(text: str, folder: Path) -> str:
    """Inline Markdown (code, escapes, images, links, bold, italic) to HTML; the rest escaped."""
    out, at = [], 0
    for m in _INLINE.finditer(text):
        out.append(html.escape(text[at:m.start()]))
        at = m.end()
        if m["code"] is not None:
            out.append(f"<code>{html.escape(m['code'])}</code>")
        elif m["escaped"] is not None:
            out.append(html.escape(m["escaped"]))
        elif m["src"] is not None:
            out.append(_image(m["alt"], m["src"], folder))
        elif m["href"] is not None:
            out.append(f'<a href="{html.escape(m["href"])}">{_inline(m["text"], folder)}</a>')
        elif m["bold"] is not None:
            out.append(f"<strong>{_inline(m['bold'], folder)}</strong>")
        else:
            out.append(f"<em>{_inline(m['em'] or m['em2'], folder)}</em>")
    return "".join(out) + html.escape(text[at:])


def _cells(line: str) -> list[str]:
    """A pipe-table row's cells (an escaped \\| stays in its cell)."""
    cells = re.split(r"(?<!\\)\|", line.strip())
    return [c.strip() for c in cells[1 if line.strip().startswith("|") else 0:
                                     -1 if line.strip().endswith("|") else None]]


_TABLE_RULE = re.compile(r"^\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$")
_LIST_ITEM = re.compile(r"^\s*(?:([-*+])|(\d+)[.)])\s+(.*)$")


def _table_start(lines: list[str], i: int) -> bool:
    return "|" in lines[i] and i + 1 < len(lines) and bool(_TABLE_RULE.match(lines[i + 1]))


def _block_start(lines: list[str], i: int) -> bool:
    """Whether line i opens a block other than a paragraph (so it ends the paragraph before it)."""
    return bool(_LIST_ITEM.match(lines[i]) or _table_start(lines, i)
                or re.match(r"^(#{1,6}\s|```|>)", lines[i].lstrip()))


def _table(lines: list[str], folder: Path) -> str:
    """A pipe table: header, alignment rule (---: right, :---: centre), rows."""
    aligns = ["right" if c.endswith(":") and not c.startswith(":") else
              "center" if c.startswith(":") and c.endswith(":") else "" for c in _cells(lines[1])]

    def tr(cells: list[str], tag: str) -> str:
        styled = [f'{tag} style="text-align: {a}"' if a else tag for a in aligns + [""] * len(cells)]
        return "<tr>" + "".join(f"<{opening}>{_inline(c, folder)}</{tag}>"
                                for c, opening in zip(cells, styled, strict=False)) + "</tr>"
    return ("<table>\n<thead>" + tr(_cells(lines[0]), "th") + "</thead>\n<tbody>\n"
            + "\n".join(tr(_cells(r), "td") for r in lines[2:]) + "\n</tbody>\n</table>")


def markdown_to_html(markdown_text: str, folder: Path) -> str:
    """Body HTML for headings, paragraphs, lists, block quotes, rules, pipe tables, fenced code and
    images; inline markup via `_inline`. Images that are files in `folder` are embedded."""
    lines, out, i = markdown_text.splitlines(), [], 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
        elif line.lstrip().startswith("```"):
            end = next((j for j in range(i + 1, len(lines)) if lines[j].lstrip().startswith("```")), len(lines))
            out.append("<pre><code>" + html.escape("\n".join(lines[i + 1:end])) + "</code></pre>")
            i = end + 1
        elif m := re.match(r"^(#{1,6})\s+(.*?)\s*#*\s*$", line):
            level = len(m[1])
            out.append(f"<h{level}>{_inline(m[2], folder)}</h{level}>")
            i += 1
        elif _table_start(lines, i):
            end = i + 2
            while end < len(lines) and "|" in lines[end] and lines[end].strip():
                end += 1
            out.append(_table(lines[i:end], folder))
            i = end
        elif re.match(r"^\s*([-*_])(\s*\1){2,}\s*$", line):
            out.append("<hr>")
            i += 1
        elif m := _LIST_ITEM.match(line):
            tag, items = ("ul" if m[1] else "ol"), [m[3]]
            i += 1
            while i < len(lines) and lines[i].strip():
                item = _LIST_ITEM.match(lines[i])
                if item and (item[1] is not None) == (tag == "ul"):
                    items.append(item[3])
                elif item or not lines[i].startswith((" ", "\t")):
                    break
                else:  # an indented continuation line
                    items[-1] += " " + lines[i].strip()
                i += 1
            out.append(f"<{tag}>" + "".join(f"<li>{_inline(t, folder)}</li>" for t in items) + f"</{tag}>")
        elif line.lstrip().startswith(">"):
            quoted = []
            while i < len(lines) and lines[i].lstrip().startswith(">"):
                quoted.append(lines[i].lstrip()[1:].strip())
                i += 1
            out.append(f"<blockquote><p>{_inline(' '.join(quoted), folder)}</p></blockquote>")
        else:
            text = [line.strip()]
            i += 1
            while i < len(lines) and lines[i].strip() and not _block_start(lines, i):
                text.append(lines[i].strip())
                i += 1
            out.append(f"<p>{_inline(' '.join(text), folder)}</p>")
    return "\n".join(out)


def html_report(markdown_text: str, folder: Path, path: Path) -> None:
    """report.html: the Markdown report as one self-contained page (plots embedded as data URIs,
    so the file works copied alone)."""
    title = next((line.lstrip("# ").strip() for line in markdown_text.splitlines() if line.startswith("# ")),
                 "lmadapt report")
    page = (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f"<title>{html.escape(title)}</title>\n<style>\n{_CSS}\n</style>\n</head>\n<body>\n"
            f"{markdown_to_html(markdown_text, Path(folder))}\n</body>\n</html>\n")
    atomic_write_text(Path(path), page)
