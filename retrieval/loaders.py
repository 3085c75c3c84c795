"""Turn files on disk into `SourceFile`s: decoded text plus what the indexer needs to see changes.

Our own small loader rather than langchain_community's: that package is not a runtime dependency,
and we need one place that decides how Japanese encodings are guessed and why a file is skipped.
One bad file never stops a run: it becomes a `SkippedFile` with a reason a person can act on.

HTML and reStructuredText are converted to Markdown-like text with `#` headings, so chunking needs
one structural splitter (Markdown headings) for all three; see `HEADING_KINDS`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import re
import unicodedata
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import yaml
from bs4 import BeautifulSoup, NavigableString, Tag
from bs4.element import PreformattedString
from langchain_core.documents import Document
from pydantic import BaseModel, ConfigDict, Field
from pypdf import PdfReader

logger = logging.getLogger(__name__)

SourceKind = Literal["markdown", "html", "rst", "text", "pdf", "csv", "json"]

SUFFIX_KINDS: dict[str, SourceKind] = {
    ".md": "markdown",
    ".markdown": "markdown",
    ".txt": "text",
    ".rst": "rst",
    ".html": "html",
    ".htm": "html",
    ".pdf": "pdf",
    ".csv": "csv",
    ".json": "json",
}

# Kinds whose `SourceFile.text` carries Markdown `#` headings that chunking may split on.
HEADING_KINDS: frozenset[str] = frozenset({"markdown", "html", "rst"})

# A guard against someone pointing the indexer at a folder of logs or dumps.
MAX_FILE_BYTES = 50 * 1024 * 1024


class SourceFile(BaseModel):
    """One loaded document. `text` is Markdown-like for `HEADING_KINDS`, plain otherwise.

    `pages` holds the text of each PDF page (page n is `pages[n - 1]`, blank pages kept as "")
    so chunks can cite a page; it is empty for other kinds.
    """

    model_config = ConfigDict(frozen=True)

    source: str = Field(description="absolute POSIX path of the file")
    title: str
    content_hash: str = Field(description="sha256 of the raw bytes, as `hash_file` computes it")
    mtime: float
    kind: SourceKind
    text: str
    pages: list[str] = Field(default_factory=list)
    url: str | None = Field(
        None, description="from Markdown front matter `url:` or an HTML canonical link"
    )

    def to_document(self) -> Document:
        """The whole file as a LangChain `Document`, for code that wants LangChain's type."""
        metadata: dict[str, Any] = {
            "source": self.source,
            "title": self.title,
            "content_hash": self.content_hash,
            "mtime": self.mtime,
            "kind": self.kind,
        }
        if self.url:
            metadata["url"] = self.url
        return Document(page_content=self.text, metadata=metadata)


class SkippedFile(BaseModel):
    """A file that was named or found but not loaded, and why (written for the person indexing)."""

    model_config = ConfigDict(frozen=True)

    path: str
    reason: str


class LoadResult(BaseModel):
    documents: list[SourceFile] = Field(default_factory=list)
    skipped: list[SkippedFile] = Field(default_factory=list)


class UnloadableFile(Exception):
    """Raised by `load_file`; `load_path` turns it into a `SkippedFile`.

    `str(error)` is the reason shown to the person indexing.
    """


# --------------------------------------------------------------------------- finding files


def _as_path_list(paths: Path | str | Iterable[Path | str]) -> list[Path]:
    # A lone str is iterable too, and iterating it would yield characters.
    if isinstance(paths, str | os.PathLike):
        return [Path(paths)]
    return [Path(p) for p in paths]


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _collect(paths: Path | str | Iterable[Path | str]) -> tuple[list[Path], list[SkippedFile]]:
    """Supported files under `paths` (resolved, deduplicated, sorted) and the named paths that
    cannot be used. Unsupported files found inside a folder are ignored silently: a docs folder
    often holds images and the like. A hidden name is only skipped below a named folder, so a
    folder such as `~/.kotae/docs` can itself be indexed."""
    found: dict[str, Path] = {}
    skipped: list[SkippedFile] = []
    for given in _as_path_list(paths):
        path = given.expanduser()
        if not path.exists():
            skipped.append(SkippedFile(path=_posix(path), reason="not found"))
        elif path.is_dir():
            for file in _walk(path, skipped):
                resolved = file.resolve()  # a symlinked file is indexed under its target's path
                found.setdefault(resolved.as_posix(), resolved)
        elif not path.is_file():
            skipped.append(SkippedFile(path=_posix(path), reason="not a regular file"))
        elif path.suffix.lower() not in SUFFIX_KINDS:
            supported = ", ".join(sorted(SUFFIX_KINDS))
            skipped.append(
                SkippedFile(
                    path=_posix(path),
                    reason=f"unsupported file type '{path.suffix or path.name}' "
                    f"(supported: {supported})",
                )
            )
        else:
            resolved = path.resolve()
            found.setdefault(resolved.as_posix(), resolved)
    return [found[key] for key in sorted(found)], skipped


def _walk(root: Path, skipped: list[SkippedFile]) -> Iterable[Path]:
    def on_error(error: OSError) -> None:
        skipped.append(
            SkippedFile(path=_posix(Path(error.filename or root)), reason=_os_reason(error))
        )

    # os.walk does not follow symlinked folders by default, so a link loop cannot hang us.
    for folder, dirnames, filenames in os.walk(root.resolve(), onerror=on_error):
        dirnames[:] = sorted(d for d in dirnames if not _is_hidden(d))
        for name in sorted(filenames):
            file = Path(folder, name)
            if _is_hidden(name) or file.suffix.lower() not in SUFFIX_KINDS:
                continue
            if file.is_file():  # drops broken symlinks
                yield file


def iter_source_paths(paths: Path | str | Iterable[Path | str]) -> list[Path]:
    """Supported files under `paths`, absolute and sorted, without reading them.

    Named paths that are missing or unsupported are logged here and reported by `load_path`.
    """
    files, problems = _collect(paths)
    for problem in problems:
        logger.warning("ignoring %s: %s", problem.path, problem.reason)
    return files


def hash_file(path: Path) -> str:
    """sha256 of the file's bytes, equal to `SourceFile.content_hash`; cheap next to embedding."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------- loading


def load_path(
    paths: Path | str | Iterable[Path | str], *, max_bytes: int = MAX_FILE_BYTES
) -> LoadResult:
    """Load every supported file named in `paths` or found below them (hidden names skipped)."""
    files, skipped = _collect(paths)
    documents: list[SourceFile] = []
    for file in files:
        try:
            documents.append(load_file(file, max_bytes=max_bytes))
        except UnloadableFile as error:
            skipped.append(SkippedFile(path=file.as_posix(), reason=str(error)))
        except Exception as error:  # a parser bug must cost one file, not the whole run
            logger.exception("unexpected error while loading %s", file)
            skipped.append(
                SkippedFile(
                    path=file.as_posix(),
                    reason=f"unexpected error: {type(error).__name__}: {error}",
                )
            )
    for problem in skipped:
        logger.warning("skipped %s: %s", problem.path, problem.reason)
    logger.info("loaded %d files, skipped %d", len(documents), len(skipped))
    return LoadResult(documents=documents, skipped=skipped)


def load_file(path: Path, *, max_bytes: int = MAX_FILE_BYTES) -> SourceFile:
    """Load one supported file; raises `UnloadableFile` with the reason it cannot be used."""
    path = Path(path).expanduser().resolve()
    kind = SUFFIX_KINDS.get(path.suffix.lower())
    if kind is None:
        raise UnloadableFile(f"unsupported file type '{path.suffix or path.name}'")
    try:
        stat = path.stat()
        if stat.st_size > max_bytes:
            raise UnloadableFile(
                f"too large ({stat.st_size / 1e6:.1f} MB; the limit is {max_bytes / 1e6:.0f} MB)"
            )
        data = path.read_bytes()
    except OSError as error:
        raise UnloadableFile(_os_reason(error)) from error

    if not data:
        raise UnloadableFile("empty file (0 bytes)")

    url: str | None = None
    pages: list[str] = []
    if kind == "pdf":
        title, text, pages = _parse_pdf(data)
    else:
        raw = _normalize_newlines(decode_text(data))
        if kind == "markdown":
            title, text, url = _parse_markdown(raw)
        elif kind == "html":
            title, text, url = _parse_html(raw)
        elif kind == "rst":
            title, text = _parse_rst(raw)
        elif kind == "csv":
            title, text = None, _parse_csv(raw)
        elif kind == "json":
            title, text = _parse_json(raw)
        else:
            title, text = None, raw

    if not text.strip():
        if kind == "pdf":
            raise UnloadableFile("no extractable text (a scanned PDF? run OCR first)")
        raise UnloadableFile("no text (empty or whitespace only)")

    return SourceFile(
        source=path.as_posix(),
        title=(title or "").strip() or path.stem,
        content_hash=hashlib.sha256(data).hexdigest(),
        mtime=stat.st_mtime,
        kind=kind,
        text=text,
        pages=pages,
        url=url,
    )


# --------------------------------------------------------------------------- decoding

# Tried after UTF-8, in this order; a tie in plausibility goes to the earlier one.
_JAPANESE_ENCODINGS = ("cp932", "euc_jp")
# More than this share of control or private-use characters means we guessed wrong (or binary).
_MAX_SUSPICIOUS_SHARE = 0.01


def decode_text(data: bytes) -> str:
    """Decode a text file: UTF-8 (BOM or not), UTF-16 with a BOM, ISO-2022-JP, else the more
    plausible of cp932 (Shift_JIS) and EUC-JP. Raises `UnloadableFile` for binary data.

    cp932 in Python maps almost every byte to *something* (0x80 to U+0080, 0xA0 to a private-use
    character...), so a successful decode proves little: we also count characters that real text
    does not contain and reject or rank candidates by them.
    """
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError as error:
            raise UnloadableFile("undecodable: broken UTF-16") from error
    if b"\x00" in data:
        raise UnloadableFile("binary file (contains NUL bytes)")
    if b"\x1b$" in data:  # ISO-2022-JP escape sequences; such bytes are also valid ASCII
        try:
            return data.decode("iso2022_jp")
        except UnicodeDecodeError:
            pass
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    else:
        if _suspicious_share(text) > _MAX_SUSPICIOUS_SHARE:
            raise UnloadableFile("binary file (control characters)")
        return text

    candidates: list[tuple[int, int, str]] = []
    for order, encoding in enumerate(_JAPANESE_ENCODINGS):
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError:
            continue
        if _suspicious_share(text) > _MAX_SUSPICIOUS_SHARE:
            continue
        # Half-width katakana are rare in real documents but typical of a wrong guess.
        oddness = _suspicious_count(text) + sum(1 for ch in text if "\uff61" <= ch <= "\uff9f")
        candidates.append((oddness, order, text))
    if not candidates:
        raise UnloadableFile("undecodable: not UTF-8, Shift_JIS (cp932) or EUC-JP text")
    return min(candidates)[2]


def _suspicious_count(text: str) -> int:
    return sum(
        1
        for ch in text
        if ch == "\ufffd"
        or (ch not in "\t\n\r\f\v" and unicodedata.category(ch) in ("Cc", "Co", "Cs"))
    )


def _suspicious_share(text: str) -> float:
    return _suspicious_count(text) / max(len(text), 1)


def _normalize_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


# --------------------------------------------------------------------------- formats

_FRONT_MATTER = re.compile(r"\A---[ \t]*\n(.*?\n)?(?:---|\.\.\.)[ \t]*(?:\n|\Z)", re.DOTALL)
_FENCE = re.compile(r"^ {0,3}(```|~~~)")
_ATX_H1 = re.compile(r"^ {0,3}#[ \t]+(.+?)(?:[ \t]+#+)?[ \t]*$")


def _parse_markdown(raw: str) -> tuple[str | None, str, str | None]:
    """Title, text without front matter, url. Front matter `title:` wins over the first H1."""
    meta: dict[str, Any] = {}
    text = raw
    match = _FRONT_MATTER.match(raw)
    if match:
        try:
            loaded = yaml.safe_load(match.group(1) or "")
        except yaml.YAMLError as error:
            logger.debug("front matter is not YAML, keeping it as text: %s", error)
        else:
            if isinstance(loaded, dict):
                meta = loaded
                text = raw[match.end() :]
    title = meta.get("title")
    url = meta.get("url")
    return (
        str(title) if title else _first_markdown_h1(text),
        text,
        str(url) if url else None,
    )


def _first_markdown_h1(text: str) -> str | None:
    fence: str | None = None
    for line in text.split("\n"):
        fence_match = _FENCE.match(line)
        if fence_match:
            if fence is None:
                fence = fence_match.group(1)
            elif fence_match.group(1) == fence:
                fence = None
            continue
        if fence is None:
            h1 = _ATX_H1.match(line)
            if h1:
                return h1.group(1).strip()
    return None


# Not text a reader would ask about: code, embedded media, and navigation menus.
_HTML_DROP = ("script", "style", "noscript", "template", "svg", "iframe", "canvas", "head", "nav")
_HTML_HEADINGS = {f"h{level}": level for level in range(1, 7)}
_HTML_BLOCKS = frozenset(
    {
        "address", "article", "aside", "blockquote", "body", "details", "dd", "div", "dl", "dt",
        "fieldset", "figcaption", "figure", "footer", "form", "header", "hr", "main", "ol", "p",
        "section", "summary", "table", "tbody", "thead", "tfoot", "tr", "ul",
    }
)  # fmt: skip
# Inside these, whitespace between children is layout, not text (it would split list items).
_HTML_CONTAINERS = frozenset({"ul", "ol", "dl", "table", "thead", "tbody", "tfoot", "tr"})


def _parse_html(raw: str) -> tuple[str | None, str, str | None]:
    """Title (<title>, else first <h1>), Markdown-like text, canonical url.

    Headings become `#` lines; blocks become paragraphs; <pre> becomes a fenced block so a `#`
    inside code is not taken for a heading.
    """
    soup = BeautifulSoup(raw, "lxml")
    title = _clean(soup.title.get_text()) if soup.title else None
    if not title:
        first_h1 = soup.find("h1")
        title = _clean(first_h1.get_text(" ")) if first_h1 else None

    url: str | None = None
    canonical = soup.find("link", rel="canonical")
    og_url = soup.find("meta", attrs={"property": "og:url"})
    if isinstance(canonical, Tag) and canonical.get("href"):
        url = str(canonical["href"])
    elif isinstance(og_url, Tag) and og_url.get("content"):
        url = str(og_url["content"])

    for tag in soup.find_all(_HTML_DROP):
        tag.decompose()
    parts: list[str] = []
    _html_to_markdown(soup.body or soup, parts)
    lines = [line.strip() for line in "".join(parts).split("\n")]
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
    return title, text, url


def _html_to_markdown(node: Tag, out: list[str]) -> None:
    for child in node.children:
        if isinstance(child, PreformattedString):  # comments, doctype, CDATA
            continue
        if isinstance(child, NavigableString):
            if node.name in _HTML_CONTAINERS and not child.strip():
                continue
            out.append(re.sub(r"\s+", " ", str(child)))
        elif isinstance(child, Tag):
            name = child.name
            if name in _HTML_HEADINGS:
                heading = _clean(child.get_text(" "))
                if heading:
                    out.append(f"\n\n{'#' * _HTML_HEADINGS[name]} {heading}\n\n")
            elif name == "br":
                out.append("\n")
            elif name == "pre":
                code = child.get_text().strip("\n")
                out.append(f"\n\n```\n{code}\n```\n\n")
            elif name == "li":
                out.append("\n- ")
                _html_to_markdown(child, out)
            elif name in ("td", "th"):
                _html_to_markdown(child, out)
                out.append(" | ")
            elif name in _HTML_BLOCKS:
                out.append("\n\n")
                _html_to_markdown(child, out)
                out.append("\n\n")
            else:
                _html_to_markdown(child, out)


def _clean(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


# A line of one repeated punctuation character: a reStructuredText section adornment.
_RST_ADORNMENT = re.compile(r"^([!-/:-@\[-`{-~])\1{2,}[ \t]*$")


def _parse_rst(raw: str) -> tuple[str | None, str]:
    """Title (first top-level section) and the text with section titles rewritten as `#` lines.

    As in docutils, the level of an adornment style (character, with or without overline) is
    the order in which the style first appears. Underline length is not checked: docutils only
    warns about short ones, and Japanese titles are counted in display columns anyway.
    Literal blocks (after `::` or a code directive) are fenced with ``` so that a `# comment`
    inside them is not taken for a heading later.
    """
    lines = raw.split("\n")
    literal = _rst_literal_lines(lines)
    styles: list[tuple[str, bool]] = []
    out: list[str] = []
    title: str | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        if i in literal:
            if i - 1 not in literal:
                out.append("```")
            out.append(line)
            if i + 1 not in literal:
                out.append("```")
            i += 1
            continue
        over = _RST_ADORNMENT.match(line)
        under = _RST_ADORNMENT.match(lines[i + 1]) if i + 1 < len(lines) else None
        if (
            over
            and i + 2 < len(lines)
            and lines[i + 1].strip()
            and lines[i + 2].strip() == line.strip()
        ):
            heading, style, consumed = lines[i + 1].strip(), (over.group(1), True), 3
        elif (
            under
            and not over
            and line.strip()
            and not line[0].isspace()
            and (i == 0 or not lines[i - 1].strip())
        ):
            heading, style, consumed = line.strip(), (under.group(1), False), 2
        else:
            out.append(line)
            i += 1
            continue
        if style not in styles:
            styles.append(style)
        level = min(styles.index(style) + 1, 6)
        if level == 1 and title is None:
            title = heading
        out.append(f"{'#' * level} {heading}")
        i += consumed
    return title, "\n".join(out)


_RST_CODE_DIRECTIVE = re.compile(r"^\s*\.\.\s+(?:code|code-block|sourcecode)::")


def _rst_literal_lines(lines: list[str]) -> set[int]:
    """Indices of the lines of literal blocks: the indented lines after a paragraph ending in
    `::` or after a code directive, up to the first line indented no deeper than the opener."""
    literal: set[int] = set()
    i = 0
    while i < len(lines):
        opener = lines[i]
        if not (opener.rstrip().endswith("::") or _RST_CODE_DIRECTIVE.match(opener)):
            i += 1
            continue
        base = len(opener) - len(opener.lstrip())
        j = i + 1
        block: list[int] = []
        while j < len(lines):
            line = lines[j]
            if line.strip() and len(line) - len(line.lstrip()) <= base:
                break
            block.append(j)
            j += 1
        while block and not lines[block[-1]].strip():  # blank lines around stay outside
            block.pop()
        while block and not lines[block[0]].strip():
            block.pop(0)
        literal.update(block)
        i = max(j, i + 1)
    return literal


def _parse_csv(raw: str) -> str:
    """Each row as `column: value` lines, rows separated by blank lines, so a row stays whole."""
    try:
        rows = list(csv.reader(io.StringIO(raw)))
    except csv.Error as error:
        raise UnloadableFile(f"invalid CSV: {error}") from error
    rows = [row for row in rows if any(cell.strip() for cell in row)]
    if len(rows) < 2:
        return ""
    header = [cell.strip() for cell in rows[0]]
    records = []
    for row in rows[1:]:
        pairs = [
            f"{header[i] if i < len(header) and header[i] else f'column {i + 1}'}: {cell.strip()}"
            for i, cell in enumerate(row)
            if cell.strip()
        ]
        records.append("\n".join(pairs))
    return "\n\n".join(records)


def _parse_json(raw: str) -> tuple[str | None, str]:
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as error:
        raise UnloadableFile(f"invalid JSON: {error}") from error
    title = data.get("title") if isinstance(data, dict) else None
    if data in (None, "", [], {}):
        return None, ""
    return (title if isinstance(title, str) else None), json.dumps(
        data, ensure_ascii=False, indent=2
    )


def _parse_pdf(data: bytes) -> tuple[str | None, str, list[str]]:
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise UnloadableFile("encrypted PDF (needs a password)")
        pages = [_normalize_newlines(page.extract_text() or "").strip() for page in reader.pages]
        metadata = reader.metadata
        title = metadata.title if metadata else None
    except UnloadableFile:
        raise
    except Exception as error:  # pypdf raises many exception types on malformed files
        raise UnloadableFile(f"unreadable PDF: {type(error).__name__}: {error}") from error
    text = "\n\n".join(page for page in pages if page)
    return (str(title) if title else None), text, pages


# --------------------------------------------------------------------------- helpers


def _posix(path: Path) -> str:
    return path.absolute().as_posix()


def _os_reason(error: OSError) -> str:
    return f"cannot read: {error.strerror or error}"
