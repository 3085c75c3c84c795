"""The fakes, driven by the real clients the bot uses.

If these pass, a failing bot test means the bot is wrong, not the stand-in: each fake is checked
through `openai`, `langchain_openai.ChatOpenAI`, `slack_sdk.WebClient`, `SignatureVerifier` and
`SocketModeClient` exactly as production code calls them.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import httpx
import openai
import pytest
from langchain_openai import ChatOpenAI
from slack_bolt import App
from slack_bolt.adapter.socket_mode import SocketModeHandler
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import SignatureVerifier
from slack_sdk.socket_mode import SocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.webhook import WebhookClient

from tests.fakes.openai_server import FakeOpenAIServer, Reply, split_pieces
from tests.fakes.slack_api import RESPONSE_URL, FakeSlackAPI
from tests.fakes.slack_signing import (
    event_body,
    post_signed,
    retry_headers,
    sign,
    slash_body,
)
from tests.fakes.socket_mode import FakeSocketModeServer

JAPANESE = "経費精算は月末までに申請してください。"
ENGLISH = "Submit expense reports by the end of the month."
SECRET = "signing-secret-for-tests"


def _openai_client(server: FakeOpenAIServer, **kwargs: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key="test-key", max_retries=0, **kwargs)


def _chat_model(server: FakeOpenAIServer, **kwargs: Any) -> ChatOpenAI:
    return ChatOpenAI(
        model="gpt-4o-mini",
        base_url=server.base_url,
        api_key="test",
        use_responses_api=False,
        max_retries=0,
        **kwargs,
    )


# --- fake OpenAI: openai client ----------------------------------------------------------


def test_openai_completion_echoes_question_and_records_request(
    fake_openai: FakeOpenAIServer,
) -> None:
    client = _openai_client(fake_openai)

    completion = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "What is kotae?"}]
    )

    assert completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-")
    assert completion.model == "gpt-4o-mini"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content == "Echo: What is kotae?"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.total_tokens == (
        completion.usage.prompt_tokens + completion.usage.completion_tokens
    )
    [request] = fake_openai.requests
    assert (request.method, request.path) == ("POST", "/v1/chat/completions")
    assert request.api_key == "test-key"
    assert request.messages == [{"role": "user", "content": "What is kotae?"}]
    assert "test-key" not in repr(request)


def test_openai_stream_splits_japanese_and_sends_usage(fake_openai: FakeOpenAIServer) -> None:
    fake_openai.push(Reply(text=JAPANESE))
    client = _openai_client(fake_openai)

    chunks = list(
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "締め切りは？"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )

    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert len(pieces) > 5
    assert "".join(pieces) == JAPANESE
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == len(pieces)
    assert len({c.id for c in chunks}) == 1


def test_openai_raw_sse_wire_format_on_unversioned_path(fake_openai: FakeOpenAIServer) -> None:
    fake_openai.push(Reply(text="two words"))
    url = fake_openai.base_url.removesuffix("/v1") + "/chat/completions"
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}

    response = httpx.post(url, json=body, headers={"Authorization": "Bearer k"})

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = response.text.split("\n\n")
    assert events[-1] == ""
    assert events[-2] == "data: [DONE]"
    payloads = [json.loads(e.removeprefix("data: ")) for e in events[:-2]]
    assert all(e.startswith("data: ") for e in events[:-1])
    assert all(p["object"] == "chat.completion.chunk" for p in payloads)
    assert ["".join(p["choices"][0]["delta"].get("content", "") for p in payloads)] == ["two words"]
    assert all("usage" not in p for p in payloads)  # only sent when include_usage is asked for
    assert fake_openai.requests[0].path == "/chat/completions"


@pytest.mark.parametrize("text", [ENGLISH, JAPANESE, "  lead\nand trail \u3000", "", "a\tb\n\nc  "])
def test_split_pieces_rejoins_to_the_original(text: str) -> None:
    pieces = split_pieces(text)

    assert "".join(pieces) == text
    assert all(pieces)


def test_push_queue_wins_over_responder_in_fifo_order(fake_openai: FakeOpenAIServer) -> None:
    seen: list[dict[str, Any]] = []

    def responder(request_json: dict[str, Any]) -> Reply:
        seen.append(request_json)
        return Reply(text="from responder")

    fake_openai.responder = responder
    fake_openai.push(Reply(text="first"), Reply(text="second"))
    client = _openai_client(fake_openai)

    answers = [
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": str(i)}])
        .choices[0]
        .message.content
        for i in range(3)
    ]

    assert answers == ["first", "second", "from responder"]
    assert [r["messages"][0]["content"] for r in seen] == ["2"]


def test_openai_delay_triggers_client_timeout(fake_openai: FakeOpenAIServer) -> None:
    fake_openai.push(Reply(text="too late", delay_s=5.0))
    client = _openai_client(fake_openai, timeout=0.3)

    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "q"}])

    assert time.monotonic() - started < 1.5
    assert len(fake_openai.requests) == 1


def test_openai_stream_dropped_mid_answer_raises_after_partial_text(
    fake_openai: FakeOpenAIServer,
) -> None:
    fake_openai.push(Reply(text=ENGLISH, fail_after_chunks=2))
    client = _openai_client(fake_openai)
    received: list[str] = []

    with pytest.raises((httpx.HTTPError, openai.APIError)):
        stream = client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "q"}], stream=True
        )
        for chunk in stream:
            received.append(chunk.choices[0].delta.content or "")

    assert "".join(received) == "".join(split_pieces(ENGLISH)[:2])


def test_api_key_is_enforced_when_configured() -> None:
    with FakeOpenAIServer(api_key="right-key") as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="wrong-key", max_retries=0)

        with pytest.raises(openai.AuthenticationError) as caught:
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "q"}])

    assert caught.value.status_code == 401
    assert caught.value.code == "invalid_api_key"


def test_wait_for_requests_times_out_with_a_clear_message(fake_openai: FakeOpenAIServer) -> None:
    with pytest.raises(AssertionError, match="expected 1 request"):
        fake_openai.wait_for_requests(1, timeout=0.05)


# --- fake OpenAI: LangChain ChatOpenAI ---------------------------------------------------


def test_chat_openai_invoke(fake_openai: FakeOpenAIServer) -> None:
    fake_openai.push(Reply(text=JAPANESE))

    message = _chat_model(fake_openai).invoke("締め切りは？")

    assert message.content == JAPANESE
    assert message.response_metadata["finish_reason"] == "stop"
    [request] = fake_openai.requests
    assert request.api_key == "test"
    assert request.json is not None
    assert request.json["model"] == "gpt-4o-mini"
    assert request.messages[-1]["content"] == "締め切りは？"


def test_chat_openai_stream_yields_several_chunks_and_usage(
    fake_openai: FakeOpenAIServer,
) -> None:
    fake_openai.push(Reply(text=ENGLISH))

    chunks = list(_chat_model(fake_openai, stream_usage=True).stream("When?"))

    text_chunks = [c.content for c in chunks if c.content]
    assert len(text_chunks) == len(ENGLISH.split())
    assert "".join(str(c) for c in text_chunks) == ENGLISH
    usage = [c.usage_metadata for c in chunks if c.usage_metadata]
    assert usage
    assert usage[-1]["output_tokens"] == len(text_chunks)
    assert fake_openai.requests[0].json is not None
    assert fake_openai.requests[0].json["stream"] is True


def test_chat_openai_stream_honours_chunk_delay(fake_openai: FakeOpenAIServer) -> None:
    fake_openai.push(Reply(text="one two three", chunk_delay_s=0.05))

    started = time.monotonic()
    chunks = [c.content for c in _chat_model(fake_openai).stream("q") if c.content]

    assert chunks == ["one", " two", " three"]
    # role, 3 content pieces and the finish chunk are each separated by a delay.
    assert time.monotonic() - started >= 4 * 0.05


@pytest.mark.parametrize(
    ("status", "error_class", "error_type"),
    [
        (500, openai.InternalServerError, "server_error"),
        (429, openai.RateLimitError, "requests"),
        (400, openai.BadRequestError, "invalid_request_error"),
        (503, openai.InternalServerError, "server_error"),
    ],
)
def test_chat_openai_surfaces_error_statuses(
    fake_openai: FakeOpenAIServer,
    status: int,
    error_class: type[openai.APIStatusError],
    error_type: str,
) -> None:
    fake_openai.push(Reply(status=status, error_message=f"boom {status}"))

    with pytest.raises(error_class) as caught:
        _chat_model(fake_openai).invoke("q")

    error = caught.value
    assert error.status_code == status
    assert error.body is not None
    assert error.body["message"] == f"boom {status}"  # type: ignore[index]
    assert error.body["type"] == error_type  # type: ignore[index]
    assert (error.response.headers.get("retry-after") == "0") == (status == 429)
    assert len(fake_openai.requests) == 1  # max_retries=0 means exactly one try


def test_chat_openai_stream_error_before_first_chunk(fake_openai: FakeOpenAIServer) -> None:
    fake_openai.push(Reply(status=500, error_message="upstream down"))

    with pytest.raises(openai.InternalServerError, match="upstream down"):
        list(_chat_model(fake_openai).stream("q"))


# --- fake Slack Web API ------------------------------------------------------------------


def _web_client(fake: FakeSlackAPI, token: str = "xoxb-test-token") -> WebClient:
    return WebClient(token=token, base_url=fake.base_url)


def test_auth_test_identifies_the_bot(fake_slack: FakeSlackAPI) -> None:
    response = _web_client(fake_slack).auth_test()

    assert response["ok"] is True
    assert (response["user_id"], response["bot_id"], response["team_id"]) == ("UBOT", "BBOT", "T1")
    assert response["user"] == "kotae"
    [call] = fake_slack.calls("auth.test")
    assert call.token == "xoxb-test-token"
    assert "xoxb-test-token" not in repr(call)


def test_post_message_returns_increasing_ts_and_decodes_blocks(fake_slack: FakeSlackAPI) -> None:
    client = _web_client(fake_slack)
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*answer*"}}]

    first = client.chat_postMessage(channel="C1", text="answer", blocks=blocks, thread_ts="1.0")
    second = client.chat_postMessage(channel="C1", text="again")

    assert re.fullmatch(r"\d{10}\.\d{6}", first["ts"])
    assert float(second["ts"]) > float(first["ts"])
    assert first["channel"] == "C1"
    assert first["message"]["text"] == "answer"
    assert first["message"]["blocks"] == blocks
    assert first["message"]["thread_ts"] == "1.0"
    assert first["message"]["ts"] == first["ts"]
    assert "thread_ts" not in second["message"]
    call = fake_slack.calls("chat.postMessage")[0]
    assert call.headers["content-type"].startswith("application/json")
    assert call.blocks == blocks
    assert call.params["thread_ts"] == "1.0"


def test_form_encoded_methods_are_parsed(fake_slack: FakeSlackAPI) -> None:
    client = _web_client(fake_slack)

    client.reactions_add(channel="C1", name="eyes", timestamp="1.0")
    client.reactions_remove(channel="C1", name="eyes", timestamp="1.0")

    [added] = fake_slack.calls("reactions.add")
    assert added.params == {"channel": "C1", "name": "eyes", "timestamp": "1.0"}
    assert added.headers["content-type"] == "application/x-www-form-urlencoded"
    assert len(fake_slack.calls("reactions.remove")) == 1


def test_form_encoded_blocks_are_decoded(fake_slack: FakeSlackAPI) -> None:
    blocks = [{"type": "divider"}]

    _web_client(fake_slack).api_call(
        "chat.postMessage", params={"channel": "C1", "blocks": json.dumps(blocks)}
    )

    [call] = fake_slack.calls("chat.postMessage")
    assert isinstance(call.params["blocks"], str)
    assert call.blocks == blocks


def test_multipart_bodies_are_parsed(fake_slack: FakeSlackAPI) -> None:
    _web_client(fake_slack).api_call("files.upload", data={"channels": "C1", "content": "本文"})

    [call] = fake_slack.calls("files.upload")
    assert call.params == {"channels": "C1", "content": "本文"}


def test_update_ephemeral_delete_and_status(fake_slack: FakeSlackAPI) -> None:
    client = _web_client(fake_slack)
    posted = client.chat_postMessage(channel="C1", text="考え中…", thread_ts="1.0")

    updated = client.chat_update(channel="C1", ts=posted["ts"], text="done")
    ephemeral = client.chat_postEphemeral(channel="C1", user="U1", text="only you")
    status = client.assistant_threads_setStatus(channel_id="C1", thread_ts="1.0", status="…")
    deleted = client.chat_delete(channel="C1", ts=posted["ts"])

    assert (updated["channel"], updated["ts"], updated["text"]) == ("C1", posted["ts"], "done")
    assert re.fullmatch(r"\d{10}\.\d{6}", ephemeral["message_ts"])
    assert status["ok"] is True
    assert fake_slack.calls("assistant.threads.setStatus")[0].params["status"] == "…"
    assert deleted["ok"] is True
    assert fake_slack.thread_messages("C1", "1.0") == []
    with pytest.raises(SlackApiError, match="message_not_found"):
        client.chat_update(channel="C1", ts=posted["ts"], text="gone")


def test_conversations_replies_returns_set_thread_plus_bot_answers(
    fake_slack: FakeSlackAPI,
) -> None:
    fake_slack.set_thread("C1", "1600000000.000100", [{"user": "U1", "text": "<@UBOT> 質問"}])
    client = _web_client(fake_slack)
    client.chat_postMessage(channel="C1", text="回答", thread_ts="1600000000.000100")

    replies = client.conversations_replies(channel="C1", ts="1600000000.000100")

    assert replies["has_more"] is False
    assert [(m.get("user"), m["text"]) for m in replies["messages"]] == [
        ("U1", "<@UBOT> 質問"),
        ("UBOT", "回答"),
    ]
    assert replies["messages"][0]["ts"] == "1600000000.000100"
    assert replies["messages"][1]["bot_id"] == "BBOT"
    with pytest.raises(SlackApiError, match="thread_not_found"):
        client.conversations_replies(channel="C1", ts="1.0")


def test_users_info_reflects_admin_table(fake_slack: FakeSlackAPI) -> None:
    fake_slack.set_user("UADMIN", is_admin=True)
    fake_slack.set_user("UOWNER", is_owner=True)
    client = _web_client(fake_slack)

    admin, owner, member = (client.users_info(user=u)["user"] for u in ("UADMIN", "UOWNER", "U1"))

    assert (admin["id"], admin["is_admin"], admin["is_owner"]) == ("UADMIN", True, False)
    assert (owner["is_admin"], owner["is_owner"]) == (False, True)
    assert (member["id"], member["is_admin"], member["is_owner"]) == ("U1", False, False)


def test_chat_stream_helper_builds_the_streamed_message(fake_slack: FakeSlackAPI) -> None:
    client = _web_client(fake_slack)
    fake_slack.set_thread("C1", "1600000000.000100", [{"user": "U1", "text": "q"}])

    streamer = client.chat_stream(
        channel="C1",
        thread_ts="1600000000.000100",
        recipient_team_id="T1",
        recipient_user_id="U1",
        buffer_size=4,
    )
    for piece in ["経費", "精算は", "月末まで"]:
        streamer.append(markdown_text=piece)
    streamer.stop(markdown_text="です。")

    assert len(fake_slack.calls("chat.startStream")) == 1
    assert len(fake_slack.calls("chat.appendStream")) >= 1
    assert len(fake_slack.calls("chat.stopStream")) == 1
    answer = fake_slack.thread_messages("C1", "1600000000.000100")[-1]
    assert answer["text"] == "経費精算は月末までです。"
    with pytest.raises(SlackApiError, match="message_not_in_streaming_state"):
        client.chat_appendStream(channel="C1", ts=answer["ts"], markdown_text="more")


def test_fail_makes_a_method_return_slack_errors(fake_slack: FakeSlackAPI) -> None:
    client = _web_client(fake_slack)
    fake_slack.fail("assistant.threads.setStatus")
    fake_slack.fail("chat.postMessage", "channel_not_found", times=1)

    with pytest.raises(SlackApiError) as caught:
        client.assistant_threads_setStatus(channel_id="C1", thread_ts="1.0", status="x")
    assert caught.value.response.status_code == 200
    assert caught.value.response["error"] == "not_allowed_token_type"
    with pytest.raises(SlackApiError, match="channel_not_found"):
        client.chat_postMessage(channel="C1", text="a")
    assert client.chat_postMessage(channel="C1", text="b")["ok"] is True

    fake_slack.clear_failures()
    assert client.assistant_threads_setStatus(channel_id="C1", thread_ts="1.0", status="x")["ok"]


def test_fail_with_429_looks_like_slack_rate_limiting(fake_slack: FakeSlackAPI) -> None:
    fake_slack.fail("chat.update", "ratelimited", status=429)

    with pytest.raises(SlackApiError) as caught:
        _web_client(fake_slack).chat_update(channel="C1", ts="1.0", text="x")

    assert caught.value.response.status_code == 429
    assert caught.value.response.headers["Retry-After"] == "0"
    assert caught.value.response["error"] == "ratelimited"


def test_missing_token_is_not_authed(fake_slack: FakeSlackAPI) -> None:
    with pytest.raises(SlackApiError, match="not_authed"):
        WebClient(base_url=fake_slack.base_url).chat_postMessage(channel="C1", text="x")


def test_response_url_posts_are_recorded(fake_slack: FakeSlackAPI) -> None:
    response = WebhookClient(fake_slack.response_url()).send(
        text="回答です", response_type="ephemeral"
    )

    assert response.status_code == 200
    [call] = fake_slack.calls(RESPONSE_URL)
    assert call.params == {"text": "回答です", "response_type": "ephemeral"}


def test_wait_for_blocks_until_calls_arrive_from_other_threads(fake_slack: FakeSlackAPI) -> None:
    client = _web_client(fake_slack)

    def answer_later() -> None:
        time.sleep(0.05)
        client.chat_postMessage(channel="C1", text="one")
        client.chat_postMessage(channel="C1", text="two")

    worker = threading.Thread(target=answer_later)
    worker.start()
    calls = fake_slack.wait_for("chat.postMessage", count=2, timeout=2.0)
    worker.join()

    assert [c.text for c in calls] == ["one", "two"]
    with pytest.raises(AssertionError, match=r"chat\.update.*chat\.postMessage"):
        fake_slack.wait_for("chat.update", timeout=0.05)


# --- signed requests ---------------------------------------------------------------------


def test_sign_matches_slack_sdk_verifier() -> None:
    body = event_body({"type": "app_mention", "text": "<@UBOT> hi"}, "Ev1")
    verifier = SignatureVerifier(SECRET)

    assert verifier.is_valid_request(body, sign(SECRET, body))
    assert not verifier.is_valid_request(body, sign("another-secret", body))
    assert not verifier.is_valid_request(body + " ", sign(SECRET, body))
    assert not verifier.is_valid_request(body, sign(SECRET, body, int(time.time()) - 600))


def test_event_and_slash_bodies_have_slacks_shape() -> None:
    event = {
        "type": "app_mention",
        "user": "U1",
        "text": "<@UBOT> hi",
        "ts": "1.0",
        "channel": "C1",
    }

    envelope = json.loads(event_body(event, "Ev123"))
    form = {k: v[0] for k, v in parse_qs(slash_body(text="経費 精算", user_id="U9")).items()}

    assert envelope["type"] == "event_callback"
    assert (envelope["event_id"], envelope["team_id"], envelope["api_app_id"]) == (
        "Ev123",
        "T1",
        "A1",
    )
    assert envelope["event"] == event
    assert envelope["authorizations"][0]["user_id"] == "UBOT"
    assert envelope["authorizations"][0]["is_bot"] is True
    assert form["command"] == "/kotae"
    assert form["text"] == "経費 精算"
    assert (form["user_id"], form["channel_id"]) == ("U9", "C1")
    assert form["response_url"].startswith("https://")


@pytest.fixture
def verifying_server() -> Iterator[tuple[str, list[dict[str, str]]]]:
    """A minimal app endpoint that checks signatures with slack_sdk, as Bolt does."""
    seen: list[dict[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"])).decode()
            headers = dict(self.headers.items())
            seen.append(headers)
            ok = SignatureVerifier(SECRET).is_valid_request(body, headers)
            reply = b"ok" if ok else b"invalid signature"
            self.send_response(200 if ok else 401)
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/slack/events", seen
    server.shutdown()
    server.server_close()
    thread.join()


def test_post_signed_passes_verification_and_returns_errors(
    verifying_server: tuple[str, list[dict[str, str]]],
) -> None:
    url, seen = verifying_server
    body = slash_body(text="hi")
    form = "application/x-www-form-urlencoded"

    good = post_signed(url, body, SECRET, form, extra_headers=retry_headers(1))
    bad = post_signed(url, body, "wrong-secret", form)
    stale = post_signed(url, body, SECRET, form, timestamp=int(time.time()) - 600)

    assert good[:2] == (200, "ok")
    assert 0 < good[2] < 2
    assert bad[:2] == (401, "invalid signature")
    assert stale[0] == 401
    assert seen[0]["Content-Type"] == form
    assert (seen[0]["X-Slack-Retry-Num"], seen[0]["X-Slack-Retry-Reason"]) == ("1", "http_timeout")


# --- fake Socket Mode --------------------------------------------------------------------


@pytest.fixture
def socket_client(
    fake_slack: FakeSlackAPI, fake_socket_mode: FakeSocketModeServer
) -> Iterator[tuple[SocketModeClient, list[SocketModeRequest]]]:
    """slack_sdk's built-in client, acking each request with an echo of its payload text."""
    received: list[SocketModeRequest] = []

    def listener(client: SocketModeClient, request: SocketModeRequest) -> None:
        received.append(request)
        payload = {"text": request.payload["text"]} if request.type == "slash_commands" else None
        client.send_socket_mode_response(
            SocketModeResponse(envelope_id=request.envelope_id, payload=payload)
        )

    client = SocketModeClient(
        app_token="xapp-1-test",
        web_client=WebClient(base_url=fake_slack.base_url),
        auto_reconnect_enabled=True,
    )
    client.socket_mode_request_listeners.append(listener)
    client.connect()
    fake_socket_mode.wait_for_connection()
    yield client, received
    client.auto_reconnect_enabled = False
    fake_socket_mode.close_connections()
    client.close()


def test_socket_mode_client_receives_and_acks_events(
    fake_slack: FakeSlackAPI,
    fake_socket_mode: FakeSocketModeServer,
    socket_client: tuple[SocketModeClient, list[SocketModeRequest]],
) -> None:
    _, received = socket_client
    payload = json.loads(event_body({"type": "app_mention", "text": "<@UBOT> hi"}, "Ev1"))

    envelope_id = fake_socket_mode.send_envelope(
        "events_api", payload, retry_attempt=1, retry_reason="timeout"
    )
    ack = fake_socket_mode.wait_for_ack(envelope_id, timeout=2.0)

    assert ack == {"envelope_id": envelope_id}
    [request] = received
    assert (request.type, request.envelope_id) == ("events_api", envelope_id)
    assert request.payload["event_id"] == "Ev1"
    assert request.retry_attempt == 1
    assert request.retry_reason == "timeout"
    assert request.accepts_response_payload is False
    [opened] = fake_slack.calls("apps.connections.open")
    assert opened.token == "xapp-1-test"


def test_socket_mode_slash_command_ack_carries_payload(
    fake_socket_mode: FakeSocketModeServer,
    socket_client: tuple[SocketModeClient, list[SocketModeRequest]],
) -> None:
    payload = {k: v[0] for k, v in parse_qs(slash_body(text="質問")).items()}

    envelope_id = fake_socket_mode.send_envelope("slash_commands", payload)
    ack = fake_socket_mode.wait_for_ack(envelope_id, timeout=2.0)

    assert ack["payload"] == {"text": "質問"}
    assert socket_client[1][0].accepts_response_payload is True


def test_socket_mode_disconnect_makes_the_client_reconnect(
    fake_slack: FakeSlackAPI,
    fake_socket_mode: FakeSocketModeServer,
    socket_client: tuple[SocketModeClient, list[SocketModeRequest]],
) -> None:
    fake_socket_mode.send_disconnect()
    fake_socket_mode.wait_for_connection(count=2, timeout=2.0)

    envelope_id = fake_socket_mode.send_envelope("events_api", {"event": {"type": "app_mention"}})

    assert fake_socket_mode.wait_for_ack(envelope_id, timeout=2.0)["envelope_id"] == envelope_id
    assert len(fake_slack.calls("apps.connections.open")) == 2


def test_connections_open_needs_an_app_level_token(fake_slack: FakeSlackAPI) -> None:
    fake_slack.socket_mode_url = "ws://127.0.0.1:1/link/"

    with pytest.raises(SlackApiError, match="not_allowed_token_type"):
        _web_client(fake_slack).apps_connections_open(app_token="xoxb-not-an-app-token")

    url = WebClient(base_url=fake_slack.base_url).apps_connections_open(app_token="xapp-1")["url"]
    assert url == "ws://127.0.0.1:1/link/"


def test_fakes_are_reached_directly_even_with_a_proxy_configured(
    fake_openai: FakeOpenAIServer,
    fake_slack: FakeSlackAPI,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A dead proxy: any request that went through it would fail. conftest's NO_PROXY saves us.
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")

    completion = _openai_client(fake_openai).chat.completions.create(
        model="m", messages=[{"role": "user", "content": "q"}]
    )
    auth = _web_client(fake_slack).auth_test()

    assert completion.choices[0].message.content == "Echo: q"
    assert auth["user_id"] == "UBOT"


def test_bolt_app_answers_a_mention_over_socket_mode(
    fake_slack: FakeSlackAPI, fake_socket_mode: FakeSocketModeServer
) -> None:
    app = App(client=WebClient(token="xoxb-test", base_url=fake_slack.base_url))

    @app.event("app_mention")
    def answer(event: dict[str, Any], say: Any) -> None:
        say(text=f"got: {event['text']}", thread_ts=event["ts"])

    handler = SocketModeHandler(app, app_token="xapp-1-test")
    handler.connect()
    try:
        fake_socket_mode.wait_for_connection()
        event = {
            "type": "app_mention",
            "user": "U1",
            "text": "<@UBOT> hi",
            "ts": "1600000000.000100",
            "channel": "C1",
            "event_ts": "1600000000.000100",
        }
        envelope_id = fake_socket_mode.send_envelope(
            "events_api", json.loads(event_body(event, "Ev1"))
        )

        assert fake_socket_mode.wait_for_ack(envelope_id, timeout=2.0) == {
            "envelope_id": envelope_id
        }
        [posted] = fake_slack.wait_for("chat.postMessage", timeout=2.0)
        assert posted.text == "got: <@UBOT> hi"
        assert posted.params["thread_ts"] == "1600000000.000100"
        assert posted.token == "xoxb-test"
    finally:
        handler.client.auto_reconnect_enabled = False
        fake_socket_mode.close_connections()
        handler.close()
