"""Local stand-ins for the services tests cannot reach, speaking their real wire formats.

- `openai_server.FakeOpenAIServer`: OpenAI-compatible chat completions (JSON and SSE).
- `slack_api.FakeSlackAPI`: Slack Web API for `slack_sdk.WebClient`.
- `socket_mode.FakeSocketModeServer`: Slack Socket Mode websocket endpoint.
- `slack_signing`: signed Events API / slash command requests over real HTTP.
"""
