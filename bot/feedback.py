"""👍/👎 votes, appended as JSON lines with the question, answer id and user."""

from __future__ import annotations

import json
import re
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, TypeGuard

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
        self._append({"type": "answer", "answer_id": answer_id, "question": question})

    def vote(self, answer_id: str, user: str, vote: str, channel: str | None) -> dict:
        with self._lock:
            question = self._questions.get(answer_id)
        if question is None:
            question = self._question_from_file(answer_id)
        record = {"type": "vote", "answer_id": answer_id, "vote": vote, "user": user,
                  "channel": channel, "question": question}
        self._append(record)
        return record

    def records(self) -> list[dict]:
        if not self.path.exists():
            return []
        with self.path.open(encoding="utf-8") as handle:
            return [json.loads(line) for line in handle if line.strip()]

    def _question_from_file(self, answer_id: str) -> str | None:
        for record in reversed(self.records()):
            if record.get("type") == "answer" and record.get("answer_id") == answer_id:
                return record.get("question")
        return None

    def _append(self, record: dict) -> None:
        record = {"at": time.time(), **record}
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
