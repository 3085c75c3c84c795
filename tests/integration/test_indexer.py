"""Indexer: incremental by content hash, atomic version switch, lock, bad files reported."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from retrieval.embeddings import BGEM3Embeddings
from retrieval.errors import IndexLocked, IndexMissing
from retrieval.indexer import Indexer, IndexProgress
from retrieval.settings import Settings
from retrieval.stores.local import IndexLayout, LiveIndex


@pytest.fixture
def indexer(settings: Settings, embeddings: BGEM3Embeddings) -> Indexer:
    return Indexer(settings, embeddings)


def served_chunks(settings: Settings) -> dict[str, list[str]]:
    """source -> chunk ids in the served version, read back from disk."""
    store = LiveIndex(settings.index_dir, device="cpu").store()
    return {source: [c.chunk_id for c in store.chunks_of(source)] for source in store.files()}


def test_full_build_then_search(indexer: Indexer, settings: Settings, sample_docs: Path) -> None:
    summary = indexer.run([sample_docs])
    assert summary.switched and not summary.failed
    assert len(summary.added) == len(list(p for p in sample_docs.iterdir() if p.is_file()))
    assert summary.chunks_total == summary.chunks_embedded > len(summary.added)
    chunks = served_chunks(settings)
    assert set(chunks) == set(summary.added)
    store = LiveIndex(settings.index_dir, device="cpu").store()
    some = store.chunks_of(summary.added[0])[0]
    for key in ("source", "title", "heading_path", "chunk_number", "content_hash", "mtime"):
        assert key in some.metadata


def test_unchanged_corpus_embeds_nothing(indexer: Indexer, sample_docs: Path) -> None:
    first = indexer.run([sample_docs])
    second = indexer.run([sample_docs])
    assert second.chunks_embedded == 0 and not second.switched
    assert second.version == first.version
    assert len(second.unchanged) == len(first.added)


def test_changed_added_and_deleted_files(indexer: Indexer, settings: Settings,
                                         sample_docs: Path) -> None:
    indexer.run([sample_docs])
    before = served_chunks(settings)
    changed = sample_docs / "expense-ja.md"
    appendix = "\n\n## 追記\n\n交通費は月末にまとめて申請します。\n"
    changed.write_text(changed.read_text("utf-8") + appendix, encoding="utf-8")
    removed = sample_docs / "oncall-runbook.md"
    removed.unlink()
    added = sample_docs / "new-note.md"
    added.write_text("# New note\n\nThe office plant is watered on Fridays.\n", encoding="utf-8")

    summary = indexer.run([sample_docs])
    key = lambda p: p.resolve().as_posix()  # noqa: E731
    assert summary.updated == [key(changed)]
    assert summary.added == [key(added)]
    assert summary.removed == [key(removed)]
    after = served_chunks(settings)
    assert key(removed) not in after
    assert len(after[key(changed)]) >= len(before[key(changed)])
    embedded_files = {key(changed), key(added)}
    assert summary.chunks_embedded == sum(len(after[f]) for f in embedded_files)
    for source in set(after) - embedded_files:  # untouched files keep their chunks
        assert after[source] == before[source]


def test_bad_files_are_skipped_and_reported(indexer: Indexer, settings: Settings,
                                            sample_docs: Path) -> None:
    (sample_docs / "binary.txt").write_bytes(b"\x00\x01\x02garbage\x00" * 50)
    (sample_docs / "empty.md").write_text("   \n", encoding="utf-8")
    (sample_docs / "broken.pdf").write_bytes(b"%PDF-1.4 not really a pdf")
    summary = indexer.run([sample_docs])
    failed = {Path(source).name for source, _reason in summary.failed}
    assert {"binary.txt", "empty.md", "broken.pdf"} <= failed
    assert all(reason for _source, reason in summary.failed)
    assert summary.switched and len(summary.added) >= 10


def test_interrupted_run_keeps_serving_previous_version(
        indexer: Indexer, settings: Settings, sample_docs: Path) -> None:
    first = indexer.run([sample_docs])
    (sample_docs / "expense-ja.md").write_text("# 経費\n\n内容を変更しました。\n", encoding="utf-8")

    def interrupt(progress: IndexProgress) -> None:
        if progress.phase == "embedding":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        indexer.run([sample_docs], progress=interrupt)
    layout = IndexLayout(settings.index_dir)
    assert layout.current_version() == first.version
    assert not list(layout.versions_dir.glob(".building-*"))  # the partial build is gone
    assert sum(len(c) for c in served_chunks(settings).values()) == first.chunks_total
    again = indexer.run([sample_docs])  # and the next run completes normally
    assert again.switched and again.updated


def test_second_indexer_is_refused_with_who_holds_the_lock(
        indexer: Indexer, settings: Settings, sample_docs: Path) -> None:
    layout = IndexLayout(settings.index_dir)
    with layout.lock("U123 via Slack"), pytest.raises(IndexLocked, match="U123 via Slack"):
        indexer.run([sample_docs])


def test_full_rebuild_re_embeds_everything(indexer: Indexer, sample_docs: Path) -> None:
    first = indexer.run([sample_docs])
    rebuilt = indexer.run([sample_docs], full=True)
    assert rebuilt.switched and rebuilt.version != first.version
    assert rebuilt.chunks_embedded == first.chunks_embedded


def test_reader_switches_to_a_new_version(indexer: Indexer, settings: Settings,
                                          sample_docs: Path) -> None:
    live = LiveIndex(settings.index_dir, device="cpu", check_interval_s=0)
    with pytest.raises(IndexMissing, match="kotae index"):
        live.store()
    indexer.run([sample_docs])
    old_count = live.store().count
    for path in list(sample_docs.iterdir())[:3]:
        path.unlink() if path.is_file() else shutil.rmtree(path)
    indexer.run([sample_docs])
    assert live.store().count < old_count


def test_a_run_without_paths_refreshes_the_folders_the_index_was_built_from(
        settings: Settings, embeddings: BGEM3Embeddings, sample_docs: Path,
        tmp_path: Path) -> None:
    """KOTAE_DOCS_DIR unset: `kotae index` / `/kotae reindex` with no paths must refresh the
    team's documents, not replace them with the bundled samples."""
    unset = Settings(_env_file=None,  # type: ignore[call-arg]
                     **settings.model_dump(exclude={"docs_dir"}))
    assert "docs_dir" not in unset.model_fields_set
    first = Indexer(unset, embeddings).run([sample_docs])
    layout = IndexLayout(settings.index_dir)
    assert layout.manifest(first.version or "")["paths"] == [sample_docs.resolve().as_posix()]

    added = sample_docs / "new-note.md"
    added.write_text("# New note\n\nThe office plant is watered on Fridays.\n", encoding="utf-8")
    second = Indexer(unset, embeddings).run()
    assert second.added == [added.resolve().as_posix()] and not second.removed

    # KOTAE_DOCS_DIR set: it wins, and the corpus becomes exactly that folder
    other = tmp_path / "other-docs"
    other.mkdir()
    (other / "only.md").write_text("# Only\n\nThe only document here.\n", encoding="utf-8")
    third = Indexer(unset.model_copy(update={"docs_dir": other}), embeddings).run()
    assert third.added == [(other / "only.md").resolve().as_posix()]
    assert len(third.removed) == len(first.added) + 1


def test_an_index_without_recorded_folders_is_refreshed_file_by_file(
        settings: Settings, embeddings: BGEM3Embeddings, sample_docs: Path) -> None:
    """Versions built before folders were recorded: never fall back to the samples."""
    unset = Settings(_env_file=None,  # type: ignore[call-arg]
                     **settings.model_dump(exclude={"docs_dir"}))
    first = Indexer(unset, embeddings).run([sample_docs])
    layout = IndexLayout(settings.index_dir)
    manifest_file = layout.version_dir(first.version or "") / "manifest.json"
    manifest = json.loads(manifest_file.read_text("utf-8"))
    del manifest["paths"]
    manifest_file.write_text(json.dumps(manifest), encoding="utf-8")
    changed = sample_docs / "expense-ja.md"
    changed.write_text(changed.read_text("utf-8") + "\n\n## 追記\n\n交通費も同じです。\n",
                       encoding="utf-8")

    second = Indexer(unset, embeddings).run()
    assert second.updated == [changed.resolve().as_posix()] and not second.removed
    assert len(second.unchanged) == len(first.added) - 1


def test_a_missing_folder_keeps_its_files_instead_of_removing_them(
        indexer: Indexer, settings: Settings, sample_docs: Path, tmp_path: Path) -> None:
    team = tmp_path / "team-share"
    team.mkdir()
    (team / "wiki.md").write_text("# Wiki\n\nThe VPN gateway is vpn.example.com.\n", "utf-8")
    indexer.run([sample_docs, team])
    before = served_chunks(settings)
    unmounted = tmp_path / "unmounted"
    team.rename(unmounted)

    summary = indexer.run([sample_docs, team])
    wiki = (team / "wiki.md").resolve().as_posix()
    assert summary.removed == []
    assert wiki in summary.unchanged
    assert [(source, reason) for source, reason in summary.failed] == [
        (team.resolve().as_posix(),
         "no such file or folder; kept what was indexed from it (1 files)")]
    assert served_chunks(settings) == before

    unmounted.rename(team)
    (team / "wiki.md").unlink()  # a folder that is there again: its deletions count
    assert indexer.run([sample_docs, team]).removed == [wiki]


def test_a_full_rebuild_with_a_missing_folder_is_refused_and_keeps_serving(
        indexer: Indexer, settings: Settings, sample_docs: Path, tmp_path: Path) -> None:
    from retrieval.errors import IndexPathMissing

    team = tmp_path / "team-share"
    team.mkdir()
    (team / "wiki.md").write_text("# Wiki\n\nThe VPN gateway is vpn.example.com.\n", "utf-8")
    first = indexer.run([sample_docs, team])
    team.rename(tmp_path / "unmounted")
    with pytest.raises(IndexPathMissing, match="team-share does not exist"):
        indexer.run([sample_docs, team], full=True)
    assert IndexLayout(settings.index_dir).current_version() == first.version


def test_a_deleted_file_given_as_a_path_is_removed_not_kept(
        indexer: Indexer, settings: Settings, sample_docs: Path) -> None:
    single = sample_docs / "oncall-runbook.md"
    indexer.run([sample_docs / "expense-ja.md", single])
    single.unlink()
    summary = indexer.run([sample_docs / "expense-ja.md", single])
    assert summary.removed == [single.resolve().as_posix()]
    assert single.resolve().as_posix() not in served_chunks(settings)


def test_a_mistyped_path_is_refused_and_the_index_keeps_serving(
        indexer: Indexer, settings: Settings, sample_docs: Path) -> None:
    from retrieval.errors import IndexPathMissing

    first = indexer.run([sample_docs])
    before = served_chunks(settings)
    typo = sample_docs.parent / "docss"
    with pytest.raises(IndexPathMissing, match=r"docss: no such file or folder.*keeps serving"):
        indexer.run([typo])
    layout = IndexLayout(settings.index_dir)
    assert layout.current_version() == first.version
    assert layout.manifest(first.version or "")["paths"] == [sample_docs.resolve().as_posix()]
    assert served_chunks(settings) == before
    again = Indexer(settings.model_copy(update={"docs_dir": sample_docs}), indexer.embeddings)
    assert again.run().version == first.version  # nothing to do, nothing lost


def test_a_missing_path_beside_real_ones_is_reported_and_never_recorded(
        indexer: Indexer, settings: Settings, sample_docs: Path) -> None:
    typo = sample_docs.parent / "docss"
    summary = indexer.run([sample_docs, typo])
    assert (typo.resolve().as_posix(), "no such file or folder") in summary.failed
    manifest = IndexLayout(settings.index_dir).manifest(summary.version or "")
    assert manifest["paths"] == [sample_docs.resolve().as_posix()]


def test_other_paths_that_would_remove_most_of_the_index_need_replace(
        indexer: Indexer, settings: Settings, sample_docs: Path, tmp_path: Path) -> None:
    from retrieval.errors import IndexSwapRefused

    first = indexer.run([sample_docs])
    other = tmp_path / "other"
    other.mkdir()
    (other / "note.md").write_text("# Note\n\nThe printer is on the 3rd floor.\n", "utf-8")
    with pytest.raises(IndexSwapRefused, match=r"would remove 11 of the 11 files.*--replace"):
        indexer.run([other])
    assert IndexLayout(settings.index_dir).current_version() == first.version
    with pytest.raises(IndexSwapRefused, match="without paths") as refused:
        indexer.run([sample_docs / "expense-ja.md"])  # part of the corpus: not "add it"
    assert "name its folders too" not in str(refused.value)

    both = indexer.run([sample_docs, other])  # adding a folder is what was probably meant
    assert both.added == [(other / "note.md").resolve().as_posix()] and not both.removed
    replaced = indexer.run([other], replace=True)
    assert len(replaced.removed) == 11 and replaced.switched


def test_the_bundled_samples_may_be_replaced_without_asking(
        indexer: Indexer, settings: Settings, tmp_path: Path) -> None:
    from retrieval.settings import BUNDLED_SAMPLES

    indexer.run([BUNDLED_SAMPLES])
    team = tmp_path / "team"
    team.mkdir()
    (team / "wiki.md").write_text("# Wiki\n\nThe VPN gateway is vpn.example.com.\n", "utf-8")
    summary = indexer.run([team])
    assert summary.switched and len(summary.removed) == 11


def test_a_file_that_fails_the_same_way_again_is_not_a_change(
        indexer: Indexer, settings: Settings, sample_docs: Path) -> None:
    empty = sample_docs / "empty.md"
    empty.write_text("", encoding="utf-8")
    first = indexer.run([sample_docs])
    assert first.switched and empty.resolve().as_posix() in dict(first.failed)

    again = indexer.run([sample_docs])
    assert not again.switched and again.version == first.version
    assert dict(again.failed) == dict(first.failed)  # still reported, every run
    assert empty.resolve().as_posix() not in again.unchanged

    empty.write_text("# Empty no more\n\nNow it has text.\n", encoding="utf-8")
    fixed = indexer.run([sample_docs])
    assert fixed.added == [empty.resolve().as_posix()] and not fixed.failed


def test_a_file_that_turned_bad_keeps_its_chunks_and_does_not_republish(
        indexer: Indexer, settings: Settings, sample_docs: Path) -> None:
    turned = sample_docs / "oncall-runbook.md"
    indexer.run([sample_docs])
    before = served_chunks(settings)
    turned.write_bytes(b"\x00\x01binary now\x00" * 20)
    second = indexer.run([sample_docs])
    key = turned.resolve().as_posix()
    assert key in dict(second.failed) and key in second.unchanged
    third = indexer.run([sample_docs])
    assert not third.switched and third.version == second.version
    assert key in dict(third.failed) and key in third.unchanged
    assert served_chunks(settings) == before


def test_every_input_not_indexed_is_in_the_summary(
        indexer: Indexer, settings: Settings, sample_docs: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.md").write_text("# Secret\n\nNot part of the docs.\n", "utf-8")
    (sample_docs / "linked-folder").symlink_to(outside, target_is_directory=True)
    (sample_docs / "linked-file.md").symlink_to(outside / "secret.md")
    (sample_docs / "alias.md").symlink_to(sample_docs / "expense-ja.md")  # inside: followed
    unsupported = tmp_path / "settings.toml"
    unsupported.write_text("x = 1\n", "utf-8")

    summary = indexer.run([sample_docs, unsupported])
    failed = dict(summary.failed)
    key = lambda p: Path(p).absolute().as_posix()  # noqa: E731
    assert "unsupported file type '.toml'" in failed[key(unsupported)]
    for link in ("linked-folder", "linked-file.md"):
        assert "outside the folders being indexed" in failed[key(sample_docs / link)], failed
    indexed = set(summary.added)
    assert not any("secret" in source for source in served_chunks(settings))
    assert len(indexed) == 11  # the alias is the same file as expense-ja.md: indexed once
    assert indexer.run([sample_docs, unsupported]).switched is False  # and not a change


def test_a_damaged_utf8_file_is_indexed_with_a_warning(
        indexer: Indexer, settings: Settings, sample_docs: Path) -> None:
    damaged = sample_docs / "damaged.md"
    body = "交通費は月末にまとめて申請します。領収書の写真を添付してください。\n\n" * 20
    damaged.write_bytes(f"# 交通費\n\n{body}".encode() + b"\xff\xfe\x80\x81\x82"
                        + "\n\n## 宿泊\n\n宿泊費は上限一万円です。\n".encode())
    summary = indexer.run([sample_docs])
    key = damaged.absolute().as_posix()
    assert key in summary.added and key not in dict(summary.failed)
    assert "5 undecodable bytes replaced" in dict(summary.warnings)[key]
    assert any("宿泊費は上限一万円" in text for text in _texts_of(settings, key))


def _texts_of(settings: Settings, source: str) -> list[str]:
    store = LiveIndex(settings.index_dir, device="cpu").store()
    return [chunk.text for chunk in store.chunks_of(source)]
