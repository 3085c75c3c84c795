"""Access control inside retrieval: a restricted set's chunks are never candidates for an
audience that may not see them, results still fill k, the filtered top-k is the exact top-k
of the visible chunks, and an edited access file applies without re-embedding."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from retrieval.access import AccessInvalid, Audience
from retrieval.indexer import Indexer
from retrieval.service import KotaeService
from retrieval.settings import Settings
from tests.access_corpus import (
    HR_CHANNEL,
    HR_GROUP,
    HR_USER,
    MARKER,
    PUBLIC_CHANNEL,
    access_toml,
    write_corpus,
)

QUESTION = "When is the Monday on-call handoff and the salary band?"


@pytest.fixture
def corpus_root(tmp_path: Path, settings: Settings, embeddings) -> Path:
    docs = write_corpus(tmp_path, hr_files=12)
    indexed = Settings(**{**settings.model_dump(exclude_unset=True), "docs_dir": docs})
    summary = Indexer(indexed, embeddings).run()
    assert summary.switched and not summary.failed
    (tmp_path / "access.toml").write_text(access_toml(), encoding="utf-8")
    return tmp_path


def service_for(settings: Settings, embeddings, root: Path, **values) -> KotaeService:
    configured = Settings(**{**settings.model_dump(exclude_unset=True),
                             "access_file": root / "access.toml", **values})
    return KotaeService(configured, embeddings=embeddings)


def texts(hits) -> str:
    return " ".join(h.text + h.title + h.source for h in hits)


@pytest.mark.parametrize("mode", ["dense", "sparse", "hybrid", "all"])
def test_a_public_channel_never_gets_the_restricted_set_and_still_fills_k(
        settings: Settings, embeddings, corpus_root: Path, mode: str) -> None:
    service = service_for(settings, embeddings, corpus_root, top_k=4)
    hits = service.search(QUESTION, mode=mode, audience=Audience.in_channel(PUBLIC_CHANNEL))
    # 4 public chunks exist among 16: all four come back, none of the 12 HR ones
    assert len(hits) == 4
    assert MARKER not in texts(hits) and MARKER.lower() not in texts(hits)
    allowed = service.search(QUESTION, mode=mode, k=16,
                             audience=Audience.in_channel(HR_CHANNEL))
    assert MARKER in texts(allowed)  # the check can fail the other way too


@pytest.mark.parametrize(("audience", "sees"), [
    (Audience.private(HR_USER), True),
    (Audience.private("U0OTHER01", usergroups=frozenset({HR_GROUP})), True),
    (Audience.private("U0OTHER01", channels=frozenset({HR_CHANNEL})), True),
    (Audience.private("U0OTHER01", channels=frozenset({PUBLIC_CHANNEL})), False),
    (Audience.in_channel("C0SHARED1"), False),
    (Audience.operator(), True),
])
def test_who_sees_the_restricted_set(settings: Settings, embeddings, corpus_root: Path,
                                     audience: Audience, sees: bool) -> None:
    service = service_for(settings, embeddings, corpus_root)
    hits = service.search(QUESTION, k=16, audience=audience)
    assert (MARKER in texts(hits)) is sees


def test_filtered_top_k_is_the_exact_top_k_of_the_visible_chunks(
        settings: Settings, embeddings, corpus_root: Path) -> None:
    service = service_for(settings, embeddings, corpus_root, top_k=3, candidates=3)
    filtered = service.search(QUESTION, mode="dense",
                              audience=Audience.in_channel(PUBLIC_CHANNEL))
    everything = service.search(QUESTION, mode="dense", k=16, audience=Audience.operator())
    visible = [h for h in everything if MARKER not in h.text]
    assert [h.chunk_id for h in filtered] == [h.chunk_id for h in visible[:3]]
    assert np.allclose([h.score for h in filtered], [h.score for h in visible[:3]])


def test_without_an_audience_a_configured_service_refuses_to_search(
        settings: Settings, embeddings, corpus_root: Path) -> None:
    service = service_for(settings, embeddings, corpus_root)
    with pytest.raises(ValueError, match="needs an audience"):
        service.search(QUESTION)


def test_an_edited_access_file_applies_without_reindexing(
        settings: Settings, embeddings, corpus_root: Path) -> None:
    service = service_for(settings, embeddings, corpus_root)
    service.access._check_interval_s = 0.0  # the test does not wait out the 1 s check
    public = Audience.in_channel(PUBLIC_CHANNEL)
    assert MARKER not in texts(service.search(QUESTION, k=16, audience=public))
    version = service.index.version
    access_file = corpus_root / "access.toml"
    access_file.write_text(access_toml().replace(HR_CHANNEL, PUBLIC_CHANNEL),
                           encoding="utf-8")
    later = time.time() + 5
    os.utime(access_file, (later, later))
    assert MARKER in texts(service.search(QUESTION, k=16, audience=public))
    assert service.index.version == version  # nothing was re-embedded or rebuilt


def test_a_broken_edit_fails_closed_until_fixed(settings: Settings, embeddings,
                                                corpus_root: Path) -> None:
    service = service_for(settings, embeddings, corpus_root)
    service.access._check_interval_s = 0.0
    access_file = corpus_root / "access.toml"
    access_file.write_text(access_toml().replace("[[sets]]", "[[sets]"), encoding="utf-8")
    with pytest.raises(AccessInvalid, match=r"access.toml: not valid TOML.*line 3"):
        service.search(QUESTION, audience=Audience.in_channel(PUBLIC_CHANNEL))
    with pytest.raises(AccessInvalid):  # every time, not only the first
        service.search(QUESTION, audience=Audience.in_channel(PUBLIC_CHANNEL))


def test_a_set_whose_paths_match_nothing_stops_every_restricted_answer(
        settings: Settings, embeddings, corpus_root: Path) -> None:
    (corpus_root / "access.toml").write_text(access_toml().replace("docs/hr", "docs/HR"),
                                             encoding="utf-8")
    service = service_for(settings, embeddings, corpus_root)
    with pytest.raises(AccessInvalid, match=r"line 3 \(set 'hr'\): its paths match none"):
        service.check_access()
    with pytest.raises(AccessInvalid):
        service.search(QUESTION, audience=Audience.in_channel(PUBLIC_CHANNEL))
    assert "line 3 (set 'hr'): its paths match none" in service.status()["access"]["error"]
    # the operator still sees everything (the CLI is how it gets fixed)
    assert service.search(QUESTION, k=16, audience=Audience.operator())


def test_status_counts_the_chunks_of_each_set(settings: Settings, embeddings,
                                              corpus_root: Path) -> None:
    access = service_for(settings, embeddings, corpus_root).status()["access"]
    assert access["default"] == "everyone"
    assert access["sets"] == [{"name": "hr", "files": 12, "chunks": 12}]
    assert access["unassigned"] == {"files": 4, "chunks": 4}


def test_unset_access_file_is_todays_behaviour(settings: Settings, embeddings,
                                               corpus_root: Path) -> None:
    service = KotaeService(Settings(**{**settings.model_dump(exclude_unset=True)}),
                           embeddings=embeddings)
    assert service.status()["access"] == {"enabled": False}
    assert MARKER in texts(service.search(QUESTION, k=16))  # no audience needed, all visible
