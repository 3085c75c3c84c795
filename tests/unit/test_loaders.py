"""Loading files of every supported kind, and skipping bad ones with a reason instead of failing."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from retrieval.loaders import (
    SUFFIX_KINDS,
    LoadResult,
    SourceFile,
    hash_file,
    iter_source_paths,
    load_path,
)
from retrieval.settings import BUNDLED_SAMPLES


def write(path: Path, content: str | bytes, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        content = content.encode(encoding)
    path.write_bytes(content)
    return path


def pdf_bytes(pages: list[list[str]], title: str | None = None) -> bytes:
    """A minimal valid PDF (Helvetica, ASCII text, one `Tj` per line) with a correct xref table.

    The bundled kotae/samples/vacation-policy.pdf was written the same way.
    """

    def escape(line: str) -> str:
        return line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")

    first_page = 4 if title else 3
    page_ids = [first_page + 2 * i for i in range(len(pages))]
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [%s] /Count %d >>"
        % (" ".join(f"{p} 0 R" for p in page_ids).encode(), len(pages)),
    ]
    if title:
        objects.append(b"<< /Title (%s) >>" % escape(title).encode())
    for page_id, lines in zip(page_ids, pages, strict=True):
        stream = "BT /F1 12 Tf 72 720 Td 16 TL\n"
        stream += "".join(f"({escape(line)}) Tj T*\n" for line in lines) + "ET\n"
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 "
            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >> >> >> /Contents %d 0 R >>"
            % (page_id + 1)
        )
        objects.append(b"<< /Length %d >>\nstream\n%sendstream" % (len(stream), stream.encode()))
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    info = b" /Info 3 0 R" if title else b""
    out += b"trailer\n<< /Size %d /Root 1 0 R%s >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        info,
        xref,
    )
    return bytes(out)


def load_one(path: Path) -> SourceFile:
    result = load_path([path])
    assert result.skipped == [], result.skipped
    assert len(result.documents) == 1
    return result.documents[0]


def by_name(result: LoadResult) -> dict[str, str]:
    return {Path(s.path).name: s.reason for s in result.skipped}


# --------------------------------------------------------------------------- each format


def test_markdown_title_is_the_first_h1_outside_code(tmp_path: Path) -> None:
    path = write(
        tmp_path / "guide.md",
        "Intro line\n\n```bash\n# not a title\n```\n\n# 経費精算 #\n\n## 締め切り\n\n毎月25日。\n",
    )
    source = load_one(path)
    assert source.title == "経費精算"
    assert source.kind == "markdown"
    assert "## 締め切り" in source.text  # Markdown stays Markdown
    assert source.url is None


def test_markdown_front_matter_gives_title_and_url_and_is_not_text(tmp_path: Path) -> None:
    path = write(
        tmp_path / "page.markdown",
        "---\ntitle: Expense guide\nurl: https://wiki.example.com/expenses\n---\n# Other\n\nBody\n",
    )
    source = load_one(path)
    assert source.title == "Expense guide"
    assert source.url == "https://wiki.example.com/expenses"
    assert "wiki.example.com" not in source.text
    assert source.text.startswith("# Other")


def test_html_becomes_markdown_like_text_with_headings(tmp_path: Path) -> None:
    path = write(
        tmp_path / "faq.htm",
        """<!doctype html><html><head><title> FAQ page </title>
        <link rel="canonical" href="https://intranet.example.com/faq">
        <style>p { color: red }</style></head>
        <body><nav>Home | About</nav>
        <h1>Questions</h1><p>Intro <b>bold</b> text.</p>
        <h2>Deadlines</h2><ul><li>First item</li>
        <li>Second item</li></ul>
        <pre># not a heading
  indented</pre>
        <!-- a comment --><script>var hidden = 1;</script></body></html>""",
    )
    source = load_one(path)
    assert source.kind == "html"
    assert source.title == "FAQ page"
    assert source.url == "https://intranet.example.com/faq"
    assert "# Questions" in source.text
    assert "## Deadlines\n\n- First item\n- Second item" in source.text
    assert "Intro bold text." in source.text
    assert "```\n# not a heading" in source.text
    for noise in ("hidden", "color", "Home | About", "a comment"):
        assert noise not in source.text


def test_html_without_title_tag_uses_first_h1(tmp_path: Path) -> None:
    path = write(tmp_path / "x.html", "<html><body><h1>見出し</h1><p>本文です。</p></body></html>")
    assert load_one(path).title == "見出し"


def test_rst_sections_become_markdown_headings(tmp_path: Path) -> None:
    path = write(
        tmp_path / "admin.rst",
        "=====\nAdmin\n=====\n\nIntro.\n\nSetup\n-----\n\nRun this::\n\n    # a shell comment\n"
        "    kotae index\n\nAfter the block.\n\nDetails\n~~~~~~~\n\nText.\n\nNext\n----\n\nMore.\n",
    )
    source = load_one(path)
    assert source.kind == "rst"
    assert source.title == "Admin"
    lines = source.text.split("\n")
    # Levels follow the order in which adornment styles first appear, as in docutils.
    assert [line for line in lines if line.startswith("#") and " " in line[:7]] == [
        "# Admin",
        "## Setup",
        "### Details",
        "## Next",
    ]
    assert "```\n    # a shell comment\n    kotae index\n```" in source.text


def test_text_file_title_is_its_stem(tmp_path: Path) -> None:
    source = load_one(write(tmp_path / "office-notes.txt", "# not a heading in text\nHello\n"))
    assert source.kind == "text"
    assert source.title == "office-notes"


def test_pdf_title_from_metadata_and_text_per_page(tmp_path: Path) -> None:
    path = write(
        tmp_path / "policy.pdf",
        pdf_bytes([["First page text."], [], ["Third (page) text."]], title="Leave Policy"),
    )
    source = load_one(path)
    assert source.kind == "pdf"
    assert source.title == "Leave Policy"
    assert len(source.pages) == 3
    assert "First page text." in source.pages[0]
    assert source.pages[1] == ""
    assert "Third (page) text." in source.pages[2]
    assert "First page text." in source.text and "Third (page) text." in source.text


def test_pdf_without_title_uses_stem(tmp_path: Path) -> None:
    source = load_one(write(tmp_path / "handbook.pdf", pdf_bytes([["Hello PDF"]])))
    assert source.title == "handbook"


def test_csv_rows_become_records(tmp_path: Path) -> None:
    path = write(tmp_path / "contacts.csv", "team,channel\n経理,#keiri\nSRE,#oncall\n\n")
    source = load_one(path)
    assert source.kind == "csv"
    assert source.text == "team: 経理\nchannel: #keiri\n\nteam: SRE\nchannel: #oncall"


def test_json_is_pretty_printed_and_keeps_japanese(tmp_path: Path) -> None:
    data = {"title": "用語集", "terms": {"経費": "expense"}}
    source = load_one(write(tmp_path / "glossary.json", json.dumps(data)))
    assert source.kind == "json"
    assert source.title == "用語集"
    assert json.loads(source.text) == data
    assert "経費" in source.text


# --------------------------------------------------------------------------- bad files


def test_bad_files_are_skipped_with_reasons_while_good_ones_load(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    good = write(docs / "good.md", "# Good\n\nFine text.\n")
    write(docs / "binary.txt", b"PK\x03\x04\x00\x00binary\x00data")
    write(docs / "empty.md", b"")
    write(docs / "blank.txt", " \n\t\n\u3000\n")
    write(docs / "undecodable.txt", b"abc \x85\x86\x87\xa0 def")
    write(docs / "garbage.pdf", b"%PDF-1.4\nthis is not really a pdf\x8f\x90")
    write(docs / "scanned.pdf", pdf_bytes([[]]))
    write(docs / "broken.json", '{"a": ')
    write(docs / "photo.png", b"\x89PNG\r\n")  # unsupported inside a folder: ignored silently
    explicit = write(tmp_path / "report.docx", b"PK\x03\x04")

    result = load_path([docs, explicit, tmp_path / "missing.md"])

    assert [d.source for d in result.documents] == [good.resolve().as_posix()]
    reasons = by_name(result)
    assert set(reasons) == {
        "binary.txt", "empty.md", "blank.txt", "undecodable.txt", "garbage.pdf", "scanned.pdf",
        "broken.json", "report.docx", "missing.md",
    }  # fmt: skip
    assert "binary" in reasons["binary.txt"]
    assert "empty" in reasons["empty.md"]
    assert "whitespace" in reasons["blank.txt"]
    assert "undecodable" in reasons["undecodable.txt"]
    assert "unreadable PDF" in reasons["garbage.pdf"]
    assert "no extractable text" in reasons["scanned.pdf"]
    assert "invalid JSON" in reasons["broken.json"]
    assert "unsupported file type '.docx'" in reasons["report.docx"]
    assert reasons["missing.md"] == "not found"


def test_bytes_cp932_maps_to_junk_are_not_taken_for_text(tmp_path: Path) -> None:
    # Python's cp932 decodes 0x80/0xA0/0xFD to control and private-use characters.
    path = write(tmp_path / "junk.txt", b"\x80\xa0\xfd" * 50 + b"abc")
    assert "undecodable" in by_name(load_path([path]))["junk.txt"]


def test_too_large_file_is_skipped(tmp_path: Path) -> None:
    path = write(tmp_path / "big.txt", "x" * 100)
    result = load_path([path], max_bytes=10)
    assert "too large" in by_name(result)["big.txt"]


@pytest.mark.parametrize(
    "encoding", ["shift_jis", "cp932", "euc_jp", "utf-8-sig", "utf-16", "iso2022_jp"]
)
def test_japanese_encodings_decode(tmp_path: Path, encoding: str) -> None:
    text = "# 経費精算\n\n経費精算の締め切りは毎月25日です。①～③の書類を添付してください。\n"
    if encoding in ("shift_jis", "euc_jp", "iso2022_jp"):
        text = text.replace("①～③", "三種類")  # outside those character sets
    source = load_one(write(tmp_path / "doc.md", text, encoding=encoding))
    assert source.text == text
    assert source.title == "経費精算"


def test_euc_jp_that_also_decodes_as_cp932_is_read_as_euc_jp(tmp_path: Path) -> None:
    text = "休暇の申請と承認です\n"
    raw = text.encode("euc_jp")
    assert raw.decode("cp932") != text  # cp932 accepts these bytes too, as half-width katakana
    assert load_one(write(tmp_path / "kitei.txt", raw)).text == text


def test_newlines_are_normalized(tmp_path: Path) -> None:
    source = load_one(write(tmp_path / "win.txt", "line one\r\nline two\rline three\r\n"))
    assert source.text == "line one\nline two\nline three\n"


# --------------------------------------------------------------------------- finding files


def test_hidden_names_are_skipped_below_the_named_folder_only(tmp_path: Path) -> None:
    root = tmp_path / ".kotae" / "docs"  # a hidden folder named explicitly is fine
    visible = write(root / "a.md", "# A\n\ntext\n")
    nested = write(root / "sub" / "b.txt", "text\n")
    write(root / ".draft.md", "# Draft\n\ntext\n")
    write(root / ".git" / "notes.md", "# Git\n\ntext\n")
    write(root / "sub" / ".cache" / "c.md", "# C\n\ntext\n")

    assert iter_source_paths([root]) == [visible.resolve(), nested.resolve()]
    assert [Path(d.source).name for d in load_path([root]).documents] == ["a.md", "b.txt"]


def test_iter_source_paths_is_sorted_absolute_and_deduplicated(tmp_path: Path) -> None:
    b = write(tmp_path / "docs" / "b.md", "# B\n\ntext\n")
    a = write(tmp_path / "docs" / "A.TXT", "text\n")  # suffixes match case-insensitively
    write(tmp_path / "docs" / "image.jpg", b"\xff\xd8")
    paths = iter_source_paths([tmp_path / "docs", b, str(a)])
    assert paths == sorted([a.resolve(), b.resolve()], key=lambda p: p.as_posix())
    assert all(p.is_absolute() for p in paths)


def test_load_path_accepts_one_path_as_str(tmp_path: Path) -> None:
    write(tmp_path / "one.md", "# One\n\ntext\n")
    result = load_path(str(tmp_path))
    assert [d.title for d in result.documents] == ["One"]


def test_hash_file_is_the_content_hash_of_the_raw_bytes(tmp_path: Path) -> None:
    raw = "# 見出し\n\n本文\n".encode("cp932")
    path = write(tmp_path / "sjis.md", raw)
    source = load_one(path)
    assert hash_file(path) == source.content_hash == hashlib.sha256(raw).hexdigest()
    assert source.mtime == path.stat().st_mtime
    assert source.source == path.resolve().as_posix()


def test_to_document_carries_the_metadata(tmp_path: Path) -> None:
    source = load_one(write(tmp_path / "a.md", "---\nurl: https://x.example\n---\n# A\n\nbody\n"))
    document = source.to_document()
    assert document.page_content == source.text
    assert document.metadata["url"] == "https://x.example"
    assert document.metadata["content_hash"] == source.content_hash


# --------------------------------------------------------------------------- bundled corpus


def test_bundled_corpus_loads_with_no_skipped_files() -> None:
    result = load_path([BUNDLED_SAMPLES])
    assert result.skipped == []
    names = {Path(d.source).name: d for d in result.documents}
    assert 8 <= len(names) <= 12
    assert {d.kind for d in result.documents} == {"markdown", "text", "rst", "html", "pdf"}
    # Both languages: some files are Japanese (hiragana), some are English only.
    japanese = [n for n, d in names.items() if any("\u3040" <= ch <= "\u309f" for ch in d.text)]
    assert 4 <= len(japanese) <= len(names) - 4
    for name, source in names.items():
        size = (BUNDLED_SAMPLES / name).stat().st_size
        assert 1000 <= size <= 4096, (name, size)
        assert source.title != Path(name).stem or source.kind == "text", name
    assert names["expense-ja.md"].title == "経費精算"
    assert names["kotae-faq-ja.html"].title == "kotae よくある質問"
    assert names["vacation-policy.pdf"].title == "Vacation Policy"
    assert len(names["vacation-policy.pdf"].pages) == 2


def test_every_bundled_file_has_a_supported_suffix() -> None:
    files = [p for p in BUNDLED_SAMPLES.rglob("*") if p.is_file()]
    assert files and all(p.suffix in SUFFIX_KINDS for p in files)
