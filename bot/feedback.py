"""👍/👎 votes, kept as JSON records with the question, answer id and user.

One replica appends them to a local JSONL file (`FeedbackLog`). Several replicas
(KOTAE_REDIS_URL) append them to one Redis stream (`SharedFeedbackLog`), so that every vote,
whichever replica took the click, is read with one command (`kotae feedback`).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeGuard

from retrieval.redis_state import RedisLink, RedisUnavailable

if TYPE_CHECKING:
    from redis import Redis

    from bot.settings import BotSettings

# Answer ids are short tokens (the answer chain's are 12 hex characters); a button value of
# any other form was not written by the bot, and is not recorded.
_ANSWER_ID = re.compile(r"[0-9A-Za-z_-]{1,64}")


def is_answer_id(value: Any) -> TypeGuard[str]:
    return isinstance(value, str) and _ANSWER_ID.fullmatch(value) is not None


class FeedbackLog:
    def __init__(self, path: Path, remember: int = 10_000) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._questions: OrderedDict[str, str] = OrderedDict()
        self._remember = remember

    def answered(self, answer_id: str, question: str) -> None:
        """Remember which question an answer id belongs to, for the votes that follow."""
        with self._lock:
            self._questions[answer_id] = question
            while len(self._questions) > self._remember:
                self._questions.popitem(last=False)
        self._append({"at": time.time(), "type": "answer", "answer_id": answer_id,
                      "question": question})

    def vote(self, answer_id: str, user: str, vote: str, channel: str | None) -> dict:
        with self._lock:
            question = self._questions.get(answer_id)
        if question is None:
            question = self._stored_question(answer_id)
        record = {"at": time.time(), "type": "vote", "answer_id": answer_id, "vote": vote,
                  "user": user, "channel": channel, "question": question}
        self._append(record)
        return record

    def records(self) -> list[dict]:
        if not self.path.exists():
            return []
        with self.path.open(encoding="utf-8") as handle:
            return [json.loads(line) for line in handle if line.strip()]

    def _stored_question(self, answer_id: str) -> str | None:
        """The question of an answer this process no longer remembers."""
        for record in reversed(self.records()):
            if record.get("type") == "answer" and record.get("answer_id") == answer_id:
                return record.get("question")
        return None

    def _append(self, record: dict) -> None:
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")


class SharedFeedbackLog(FeedbackLog):
    """Records in the Redis stream `<prefix>feedback` (XADD, one field `record` holding the
    JSON), and each answer's question under `<prefix>answer:<id>` for `question_ttl_s`, so a
    vote clicked on any replica finds its question.

    Redis unreachable: records go to the local file (`path`) instead — nothing is lost — and
    the operator reads one line when Redis is lost and one when it is back (`RedisLink`).
    `records()` reads the stream and this machine's file together.
    """

    def __init__(self, link: RedisLink, path: Path, remember: int = 10_000,
                 question_ttl_s: float = 30 * 86_400) -> None:
        super().__init__(path, remember)
        self._link = link
        self._question_ttl_s = int(question_ttl_s)

    @property
    def stream(self) -> str:
        return self._link.key("feedback")

    def records(self) -> list[dict]:
        """Every replica's records (Redis) and this machine's fallback file, oldest first.
        Raises RedisUnavailable when Redis does not answer."""
        shared = self._link.call(self._read_stream)
        return sorted([*shared, *super().records()], key=lambda record: record.get("at", 0))

    def _read_stream(self, client: Redis) -> list[dict]:
        records: list[dict] = []
        start = "-"
        while True:
            batch = client.xrange(self.stream, min=start, max="+", count=1000)
            records += [json.loads(fields[b"record"]) for _id, fields in batch]
            if len(batch) < 1000:
                return records
            start = "(" + batch[-1][0].decode()

    def _stored_question(self, answer_id: str) -> str | None:
        try:
            question = self._link.call(lambda client: client.get(
                self._link.key("answer", answer_id)))
        except RedisUnavailable:
            question = None
        return question.decode() if question else super()._stored_question(answer_id)

    def _append(self, record: dict) -> None:
        try:
            self._link.call(lambda client: self._write(client, record))
        except RedisUnavailable:
            super()._append(record)

    def _write(self, client: Redis, record: dict) -> None:
        pipe = client.pipeline(transaction=True)
        pipe.xadd(self.stream, {"record": json.dumps(record, ensure_ascii=False)})
        if record["type"] == "answer":
            pipe.set(self._link.key("answer", record["answer_id"]), record["question"],
                     ex=self._question_ttl_s)
        pipe.execute()


def open_feedback(settings: BotSettings, link: RedisLink | None = None) -> FeedbackLog:
    """The feedback log `settings` configure: shared through `link` (or a link opened now,
    PINGing Redis) when KOTAE_REDIS_URL is set, else the local file."""
    if settings.redis_url is None:
        return FeedbackLog(settings.feedback_path)
    if link is None:
        link = RedisLink.open(settings.redis_url.get_secret_value(),
                              prefix=settings.redis_prefix)
    return SharedFeedbackLog(link, settings.feedback_path)
