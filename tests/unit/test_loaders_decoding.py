"""Decoding: a damaged UTF-8 file is read with its bad bytes replaced, not dropped whole, while
cp932 / EUC-JP detection and binary rejection keep working."""

from __future__ import annotations

from pathlib import Path

from retrieval.loaders import SourceFile, load_path

JAPANESE = "# 経費精算\n\n経費精算の締め切りは毎月25日です。領収書を添付してください。\n"


def load_one(path: Path) -> SourceFile:
    result = load_path([path])
    assert result.skipped == [], result.skipped
    [source] = result.documents
    return source


def test_utf8_markdown_with_five_stray_bytes_is_indexed_with_a_warning(tmp_path: Path) -> None:
    good = (JAPANESE * 4).encode("utf-8")
    damaged = bytearray(good)
    cuts = [good.index("。".encode(), offset) + 3 for offset in (40, 90, 140, 190, 240)]
    for cut in reversed(cuts):  # stray bytes after sentences, inserted from the end
        damaged[cut:cut] = b"\x92"
    path = tmp_path / "guide.md"
    path.write_bytes(bytes(damaged))

    source = load_one(path)

    assert source.title == "経費精算"
    assert source.text.count("\ufffd") == 5
    assert source.text.replace("\ufffd", "") == good.decode("utf-8")
    assert source.warnings == ["5 undecodable bytes replaced with U+FFFD"]


def test_large_text_file_cut_mid_character_keeps_all_but_the_cut(tmp_path: Path) -> None:
    text = "休暇の申請は前営業日までに行います。\n" * 20_000  # ~1 MB of UTF-8
    data = text.encode("utf-8")[:-2]  # the final "\n" and half of the "。" before it are gone
    path = tmp_path / "kitei.txt"
    path.write_bytes(data)

    source = load_one(path)

    assert source.text == text[:-2] + "\ufffd"
    assert source.warnings == ["2 undecodable bytes replaced with U+FFFD"]


def test_english_text_with_one_stray_latin1_byte_is_indexed(tmp_path: Path) -> None:
    # 0xE9 ("é" in Latin-1) before a space is neither UTF-8 nor a cp932 / EUC-JP lead byte.
    path = tmp_path / "menu.txt"
    path.write_bytes(b"The cafe serves coffee. " * 10 + b"Caf\xe9 au lait is " + b"fine. " * 10)
    source = load_one(path)
    assert "Caf\ufffd au lait" in source.text
    assert source.warnings == ["1 undecodable byte replaced with U+FFFD"]


def test_mostly_ascii_cp932_text_is_still_read_as_cp932(tmp_path: Path) -> None:
    # Few non-ASCII bytes, none of them valid UTF-8: a legacy file, not damaged UTF-8.
    text = "Expense report 経費 is due on the 25th of each month.\n" * 20
    path = tmp_path / "report.txt"
    path.write_bytes(text.encode("cp932"))
    source = load_one(path)
    assert source.text == text
    assert source.warnings == []


def test_euc_jp_text_is_not_taken_for_damaged_utf8(tmp_path: Path) -> None:
    # Some EUC-JP byte pairs are valid two-byte UTF-8 by chance; most are not.
    text = "休暇の申請と承認、経費精算の締め切り、在宅勤務の規程について説明します。\n" * 10
    path = tmp_path / "kitei.txt"
    path.write_bytes(text.encode("euc_jp"))
    source = load_one(path)
    assert source.text == text
    assert source.warnings == []


def test_clean_files_have_no_warnings(tmp_path: Path) -> None:
    path = tmp_path / "a.md"
    path.write_text(JAPANESE, encoding="utf-8")
    assert load_one(path).warnings == []


def test_mostly_invalid_bytes_are_still_undecodable(tmp_path: Path) -> None:
    path = tmp_path / "junk.txt"
    path.write_bytes(b"header line\n" + b"\x85\x86\x87\xa0" * 20)
    [skipped] = load_path([path]).skipped
    assert "undecodable" in skipped.reason
