"""The bot on the Milvus backend: a mention answered in its thread from Milvus, Milvus going
away mid-run answered with the apology in the thread (no silence, no trace of the error's
internals), and answers again once Milvus is back."""

from __future__ import annotations

import time
from pathlib import Path

from retrieval.embeddings import BGEM3Embeddings
from retrieval.indexer import Indexer
from retrieval.settings import Settings
from tests.fakes.openai_server import FakeOpenAIServer, Reply
from tests.integration.bot_harness import StartBot, blocks_text, mention
from tests.integration.milvus_fixtures import LiteServer


def test_milvus_down_mid_run_is_an_apology_in_the_thread_then_answers_again(
        start_bot: StartBot, settings: Settings, embeddings: BGEM3Embeddings,
        sample_docs: Path, fake_openai: FakeOpenAIServer, tmp_path: Path) -> None:
    db = tmp_path / "milvus" / "kotae.db"
    server = LiteServer(db)
    try:
        milvus = settings.model_copy(update={"store": "milvus", "milvus_uri": server.uri,
                                             "docs_dir": sample_docs})
        Indexer(milvus, embeddings).run()
        bot = start_bot(tmp_path / "unused-local-index", settings=milvus)
        for _ in range(12):
            fake_openai.push(Reply(text="月末の5営業日前までです [1]。"))

        assert bot.send_event(mention("<@UBOT> 経費精算の締め切りは？", "1700000001.000100"),
                              "EvMilvus1")[0] == 200
        [answer] = bot.wait_for_final("C1", "1700000001.000100")
        assert "Sources" in blocks_text(answer["blocks"])

        server.stop()
        assert bot.send_event(mention("<@UBOT> オンコールの引き継ぎは？", "1700000002.000100"),
                              "EvMilvus2")[0] == 200
        [apology] = bot.wait_for_final("C1", "1700000002.000100", timeout=40)
        shown = blocks_text(apology["blocks"])
        assert "Sorry" in shown and "not answering right now" in shown
        assert server.uri not in shown and "KOTAE_MILVUS_URI" not in shown  # the log has it

        server = LiteServer(db, server.port)
        # gRPC reconnects with a backoff: the same bot answers again within seconds, unrestarted
        for attempt in range(10):
            thread = f"170000001{attempt}.000100"
            bot.send_event(mention("<@UBOT> 経費精算の締め切りは？", thread), f"EvBack{attempt}")
            [again] = bot.wait_for_final("C1", thread, timeout=40)
            if "Sources" in blocks_text(again["blocks"]):
                break
            time.sleep(2)
        assert "Sources" in blocks_text(again["blocks"])
    finally:
        server.stop()
