"""Questions the bundled sample corpus (kotae/samples) can answer, and which file answers each.

For retrieval tests and demos. `source` is a file name in kotae/samples; `answer` is a short
string found verbatim in that file's loaded text (tests/unit/test_chunking.py checks it, so an
edit of the corpus that loses a fact fails loudly). `language` is the question's language; a
few questions are deliberately in the other language than their document (cross-lingual).
Each fact lives in exactly one file.
"""

from __future__ import annotations

from typing import Literal, NamedTuple


class SampleFact(NamedTuple):
    question: str
    source: str
    answer: str
    language: Literal["ja", "en"]


SAMPLE_FACTS: tuple[SampleFact, ...] = (
    # --- Japanese questions ---
    SampleFact("経費精算の締め切りはいつですか？", "expense-ja.md", "毎月25日", "ja"),
    SampleFact("立て替えた経費はいつ振り込まれますか？", "expense-ja.md", "翌月10日", "ja"),
    SampleFact("5万円以上の経費には誰の承認が必要ですか？", "expense-ja.md", "部長の承認", "ja"),
    SampleFact("在宅勤務は週に何日までできますか？", "remote-work-ja.txt", "週3日まで", "ja"),
    SampleFact("在宅勤務手当はいくらですか？", "remote-work-ja.txt", "月額5,000円", "ja"),
    SampleFact("入社初日は何時に行けばいいですか？", "onboarding-ja.md", "午前9時30分", "ja"),
    SampleFact(
        "情報セキュリティ研修はいつまでに受講しますか？", "onboarding-ja.md", "入社後14日以内", "ja"
    ),
    SampleFact(
        "kotae に資料の追加を頼むにはどのチャンネルを使いますか？",
        "kotae-faq-ja.html",
        "#kotae-docs",
        "ja",
    ),
    SampleFact("チャンクの大きさは何トークンですか？", "retrieval-ja.md", "400トークン", "ja"),
    SampleFact("有給休暇は年に何日もらえますか？", "vacation-policy.pdf", "20 days", "ja"),
    # --- English questions ---
    SampleFact(
        "When is the on-call handoff?", "oncall-runbook.md", "every Monday at 10:00 JST", "en"
    ),
    SampleFact(
        "How long before an unacknowledged page escalates to the secondary?",
        "oncall-runbook.md",
        "15 minutes",
        "en",
    ),
    SampleFact(
        "How many paid vacation days do full-time employees get?",
        "vacation-policy.pdf",
        "20 days of paid vacation",
        "en",
    ),
    SampleFact(
        "How many unused vacation days carry over to next year?",
        "vacation-policy.pdf",
        "Up to 5 unused vacation days",
        "en",
    ),
    SampleFact("How do admins rebuild the kotae index?", "kotae-admin.rst", "kotae index", "en"),
    SampleFact(
        "How many dimensions does a bge-m3 dense vector have?",
        "embeddings-retrieval.md",
        "1024-dimensional",
        "en",
    ),
    SampleFact(
        "What are the default weights of hybrid search?",
        "embeddings-retrieval.md",
        "0.4 for dense, 0.2 for sparse and 0.4 for ColBERT",
        "en",
    ),
    SampleFact(
        "What are the Tokyo office opening hours?", "office-guide.txt", "8:00 to 21:00", "en"
    ),
    SampleFact(
        "How many sources does kotae list under an answer?",
        "kotae-overview.md",
        "up to 5 sources",
        "en",
    ),
    SampleFact("What is the deadline for expense reports?", "expense-ja.md", "毎月25日", "en"),
)
