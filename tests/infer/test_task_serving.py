"""Encoder tasks served by the real server on 127.0.0.1: /v1/embeddings through the official `openai` client (float
and base64), /v1/rerank and /rerank in the Jina/Cohere shape, and the 400s between chat and encoder servers."""

from __future__ import annotations

import httpx
import openai
import pytest

from swift.infer.arguments import DeployArguments
from swift.infer.checkpoint import resolve_serve_spec
from swift.infer.engine.tasks import TaskEngine, resolve_task
from tests.infer.conftest import live_server


def task_engine(model_dir, task_type: str, name: str) -> TaskEngine:
    args = DeployArguments()
    args.model.model, args.model.task_type = str(model_dir), task_type
    return TaskEngine(args, resolve_serve_spec(args), resolve_task(args), model_name=name)


@pytest.fixture(scope="module")
def embedding_engine(tiny_llama_dir):
    return task_engine(tiny_llama_dir, "embedding", "tiny-emb")


@pytest.fixture(scope="module")
def reranker_engine(tiny_llama_dir):
    return task_engine(tiny_llama_dir, "generative_reranker", "tiny-rerank")


TEXTS = ["How tall is Mount Everest?", "What is the height of Mount Everest?", "How do bees make honey?"]


def test_openai_embeddings_float_and_base64(embedding_engine):
    want, tokens = embedding_engine.embed(TEXTS)
    with live_server(embedding_engine, model_name="tiny-emb", close_engine=False) as url:
        client = openai.OpenAI(base_url=url, api_key="none", max_retries=0)
        assert client.models.list().data[0].id == "tiny-emb"
        as_float = client.embeddings.create(model="tiny-emb", input=TEXTS, encoding_format="float")
        as_base64 = client.embeddings.create(model="tiny-emb", input=TEXTS)  # the client asks for base64
        one = client.embeddings.create(model="tiny-emb", input=TEXTS[0], dimensions=16, encoding_format="float")
        with pytest.raises(openai.BadRequestError, match="does not generate text: use POST /v1/embeddings"):
            client.chat.completions.create(model="tiny-emb", messages=[{"role": "user", "content": "hi"}])
        with pytest.raises(openai.NotFoundError):
            client.embeddings.create(model="other", input=TEXTS)
        rerank = httpx.post(f"{url.removesuffix('/v1')}/rerank", json={"query": "q", "documents": ["d"]})
    for response in (as_float, as_base64):
        assert [d.index for d in response.data] == [0, 1, 2]
        for got, ref in zip(response.data, want, strict=True):
            assert got.embedding == pytest.approx(ref, abs=1e-6)
        assert response.usage.prompt_tokens == response.usage.total_tokens == tokens
    short = one.data[0].embedding
    assert len(short) == 16
    assert sum(x * x for x in short) == pytest.approx(1.0, abs=1e-5)
    assert rerank.status_code == 400
    assert "--task_type embedding" in rerank.json()["error"]["message"]


def test_rerank_results_sorted_with_index_and_score(reranker_engine):
    documents = ["Everest is 8849 metres high.", "Bees make honey from nectar.", "Paris is in France."]
    scores, _ = reranker_engine.score(TEXTS[0], documents)
    with live_server(reranker_engine, model_name="tiny-rerank", close_engine=False) as url:
        full = httpx.post(f"{url}/rerank", json={"model": "tiny-rerank", "query": TEXTS[0],
                                                    "documents": documents}).json()
        top = httpx.post(f"{url.removesuffix('/v1')}/rerank", json={"query": TEXTS[0], "documents": [{"text": d} for d in documents],
                                                "top_n": 2, "return_documents": False}).json()
        embed = httpx.post(f"{url}/embeddings", json={"model": "tiny-rerank", "input": "x"})
    results = full["results"]
    assert sorted(r["index"] for r in results) == [0, 1, 2]
    assert [r["relevance_score"] for r in results] == sorted(scores, reverse=True)
    assert all(r["relevance_score"] == pytest.approx(scores[r["index"]]) for r in results)
    assert all(r["document"]["text"] == documents[r["index"]] for r in results)
    assert full["usage"]["total_tokens"] > 0
    assert full["model"] == "tiny-rerank"
    assert [r["index"] for r in top["results"]] == [r["index"] for r in results[:2]]
    assert "document" not in top["results"][0]
    assert embed.status_code == 400
    assert "generative_reranker" in embed.json()["error"]["message"]


def test_a_chat_server_refuses_embeddings_and_rerank(tiny_engine):
    with live_server(tiny_engine, model_name="tiny", close_engine=False) as url:
        client = openai.OpenAI(base_url=url, api_key="none", max_retries=0)
        with pytest.raises(openai.BadRequestError, match="chat model"):
            client.embeddings.create(model="tiny", input=["hi"])
        rerank = httpx.post(f"{url}/rerank", json={"query": "q", "documents": ["d"]})
    assert rerank.status_code == 400
    assert "--task_type reranker" in rerank.json()["error"]["message"]
