"""A version's prompt (system, few-shot, template, sampling) is applied by the gateway before
generation, for every backend: real uvicorn servers, the registry router, the official openai
client. The openai-backend version's upstream is a second real gateway that records what it got."""
from __future__ import annotations

import sys
from pathlib import Path

import openai
import pytest
import sqlalchemy as sa

from tuneloop.models.scripted import ScriptedBackend
from tuneloop.registry.versions import Registry
from tuneloop.server.app import create_app
from tuneloop.server.gateway import StaticRouter
from tuneloop.server.keys import create_key
from tuneloop.server.routing import RegistryRouter
from tuneloop.store import schema

sys.path.insert(0, str(Path(__file__).parent))
from test_gateway import LiveServer, flush  # noqa: E402 - the real-uvicorn helpers of the gateway tests

PROMPT = {"system": "Answer with the number only.", "template": "Q: {input}",
          "few_shot": [{"user": "Q: 1+1=", "assistant": "2"}], "sampling": {"temperature": 0.3, "max_tokens": 7}}


class RecordingModel(ScriptedBackend):
    """The upstream's model: answers "4" and remembers the messages and parameters it was given."""

    def __init__(self) -> None:
        super().__init__(lambda msgs: "4", name="upstream-model")
        self.seen: list[tuple[list, dict]] = []

    def chat(self, messages, **params):
        self.seen.append(([dict(m) for m in messages], dict(params)))
        return super().chat(messages, **params)


@pytest.fixture
def upstream(db):
    model = RecordingModel()
    app = create_app(db=db, router=StaticRouter({"upstream": model}))
    with LiveServer(app) as server:
        server.model, server.key = model, create_key(db, "ingest").secret
        yield server


@pytest.fixture
def gateway(db, upstream, tmp_path_factory):
    from tuneloop.models.local import LocalModelPool
    from tuneloop.models.tiny import build_tiny_model

    tiny = build_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny")
    reg = Registry(db)
    reg.register("v-openai", backend="openai", base_model="upstream", prompt=PROMPT,
                 params={"base_url": upstream.url + "/v1", "api_key": upstream.key, "retries": 0, "temperature": 1.0})
    reg.register("v-scripted", backend="scripted", prompt={"template": "Q: {input}"},
                 params={"script": {"Q: 2+2=": "4"}, "default": "template not applied"})
    reg.register("v-local-plain", backend="local", base_model=str(tiny))
    reg.register("v-local", backend="local", base_model=str(tiny), parent_id="v-local-plain",
                 prompt={"system": "Answer with the number only. " * 4, "sampling": {"max_tokens": 2}})
    reg.promote("v-scripted")
    pool = LocalModelPool()
    app = create_app(db=db, router=RegistryRouter(db, pool, ttl_s=0.05))
    key = create_key(db, "ingest").secret
    with LiveServer(app) as server:
        server.client = openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0, timeout=60)
        yield server
    pool.close()


def test_openai_backend_gets_the_prompted_messages_and_the_prompts_sampling(gateway, upstream, db):
    r = gateway.client.chat.completions.create(model="v-openai", messages=[{"role": "user", "content": "2+2="}])
    assert r.choices[0].message.content == "4"
    messages, params = upstream.model.seen[-1]
    assert messages == [{"role": "system", "content": "Answer with the number only."},
                        {"role": "user", "content": "Q: 1+1="}, {"role": "assistant", "content": "2"},
                        {"role": "user", "content": "Q: 2+2="}]
    # the prompt's sampling wins over the version's params; the request's own parameters win over both
    assert params["temperature"] == 0.3 and params["max_tokens"] == 7
    gateway.client.chat.completions.create(model="v-openai", temperature=0.9,
                                           messages=[{"role": "system", "content": "Caller says hi."},
                                                     {"role": "user", "content": "3+3="}])
    messages, params = upstream.model.seen[-1]
    assert messages[0] == {"role": "system", "content": "Answer with the number only.\n\nCaller says hi."}
    assert params["temperature"] == 0.9 and params["max_tokens"] == 7
    # streaming goes through the prompt as well
    chunks = list(gateway.client.chat.completions.create(model="v-openai", stream=True,
                                                         messages=[{"role": "user", "content": "5+5="}]))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "4"
    assert upstream.model.seen[-1][0][-1] == {"role": "user", "content": "Q: 5+5="}
    # the log keeps what the user sent, under the version that answered
    flush(gateway.app)
    first = db.fetch_all(sa.select(schema.interactions).where(schema.interactions.c.version_id == "v-openai")
                         .order_by(schema.interactions.c.ts))[0]
    assert first["messages"] == [{"role": "user", "content": "2+2="}] and first["response"] == "4"


def test_scripted_backend_sees_the_template_including_through_the_champion_alias(gateway, db):
    for model in ("v-scripted", "champion", "tuneloop"):
        r = gateway.client.chat.completions.create(model=model, messages=[{"role": "user", "content": "2+2="}])
        assert r.choices[0].message.content == "4", model
    chunks = list(gateway.client.chat.completions.create(model="champion", stream=True,
                                                         messages=[{"role": "user", "content": "2+2="}]))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "4"
    flush(gateway.app)
    rows = db.fetch_all(sa.select(schema.interactions).where(schema.interactions.c.version_id == "v-scripted"))
    assert len(rows) == 4 and all(r["messages"] == [{"role": "user", "content": "2+2="}] for r in rows)


def test_local_backend_sees_the_system_prompt_and_honours_its_sampling(gateway):
    msgs = [{"role": "user", "content": "2+2="}]
    plain = gateway.client.chat.completions.create(model="v-local-plain", messages=msgs, max_tokens=6)
    prompted = gateway.client.chat.completions.create(model="v-local", messages=msgs)
    # the system prompt reached the model: many more prompt tokens; the spec's max_tokens held
    assert prompted.usage.prompt_tokens >= plain.usage.prompt_tokens + 20
    assert 1 <= prompted.usage.completion_tokens <= 2
    longer = gateway.client.chat.completions.create(model="v-local", messages=msgs, max_tokens=5)
    assert longer.usage.completion_tokens > 2 or longer.choices[0].finish_reason == "stop"
