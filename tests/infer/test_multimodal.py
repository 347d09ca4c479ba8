"""Images and audio through the PyTorch engine and the server, on tiny random models with real processors: greedy
answers equal transformers' own generate on the processor's inputs (Qwen2-VL's 3-D positions and rope delta in
decoding included), image prompts batch with text prompts without changing either, and the official openai client
sends image_url (data URI) and input_audio parts to swift deploy."""

from __future__ import annotations

import base64
import io
import subprocess
import sys

import pytest

from tests.fixtures.multimodal import sample_audio, sample_image, save_tiny
from tests.infer.conftest import live_server

QUESTION = "What colour is this image?"


def spread_weights(model_dir):
    """Re-draw every matrix with std 0.3 (seeded): at the usual 0.02 a tiny random model greedily repeats one token
    whatever the image, which would make answer comparisons vacuous; these answers differ by image."""
    import torch
    from transformers import AutoModelForMultimodalLM

    model = AutoModelForMultimodalLM.from_pretrained(model_dir)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() >= 2:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    model.save_pretrained(model_dir)
    return model_dir


@pytest.fixture(scope="module")
def vl_dirs(tmp_path_factory):
    return {family: spread_weights(save_tiny(family, tmp_path_factory.mktemp(family), seed=3))
            for family in ("qwen2_vl", "llava")}


@pytest.fixture(scope="module")
def engines(vl_dirs):
    from swift.infer.engine import PtEngine

    made = {family: PtEngine(str(path), max_batch_size=8) for family, path in vl_dirs.items()}
    yield made
    for engine in made.values():
        engine.close()


def png_path(tmp_path, colour, size=56):
    path = tmp_path / f"{'-'.join(map(str, colour))}-{size}.png"
    sample_image(colour, size).save(path)
    return str(path)


def data_uri(colour, size=56) -> str:
    buffer = io.BytesIO()
    sample_image(colour, size).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def hf_greedy(model_dir, image, max_new_tokens=6) -> str:
    """transformers' generate on the processor's inputs: the reference answer."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(model_dir)
    model = AutoModelForImageTextToText.from_pretrained(model_dir).eval()
    messages = [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": QUESTION}]}]
    inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True,
                                           return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return processor.tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)


@pytest.mark.parametrize("family", ["qwen2_vl", "llava"])
def test_greedy_answers_equal_transformers_generate(family, engines, vl_dirs, tmp_path):
    from swift.infer.protocol import RequestConfig

    engine = engines[family]
    config = RequestConfig(temperature=0, max_tokens=6)
    answers = []
    for colour in ((200, 30, 30), (30, 40, 200)):
        request = {"messages": [{"role": "user", "content": "<image>" + QUESTION}],
                   "images": [png_path(tmp_path, colour)]}
        ours = engine.infer([request], config)[0].choices[0].message.content
        assert ours == hf_greedy(vl_dirs[family], sample_image(colour)).strip()
        answers.append(ours)
    assert answers[0] != answers[1]  # the pixels decide the answer


def test_pixels_change_the_answer_distribution(engines, tmp_path):
    from swift.infer.protocol import RequestConfig

    config = RequestConfig(temperature=0, max_tokens=1, logprobs=True, top_logprobs=5)

    def first_logprobs(colour):
        request = {"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": data_uri(colour)}}, {"type": "text", "text": QUESTION}]}]}
        response = engines["qwen2_vl"].infer([request], config)[0]
        assert response.usage.prompt_tokens > 20  # the image's 4 tokens and its markers are in the prompt
        return [t.logprob for t in response.choices[0].logprobs.content[0].top_logprobs]

    assert first_logprobs((200, 30, 30)) != first_logprobs((30, 40, 200))


def test_image_prompts_batch_with_text_prompts(engines, tmp_path):
    from swift.infer.protocol import RequestConfig

    engine = engines["qwen2_vl"]
    config = RequestConfig(temperature=0, max_tokens=8)
    requests = []
    for i in range(6):
        if i % 2:
            requests.append({"messages": [{"role": "user", "content": f"Text only question number {i}?"}]})
        else:
            colour = ((200, 30, 30), (30, 180, 40), (30, 40, 200))[i // 2]
            requests.append({"messages": [{"role": "user", "content": "<image>" + QUESTION}],
                             "images": [png_path(tmp_path, colour, size=56 + 28 * (i // 2))]})
    alone = [engine.infer([r], config)[0].choices[0].message.content for r in requests]
    together = [r.choices[0].message.content for r in engine.infer(requests, config)]
    assert together == alone


def test_openai_client_sends_image_url_parts(engines, vl_dirs):
    import openai

    engine = engines["qwen2_vl"]
    with live_server(engine) as base_url:
        client = openai.OpenAI(base_url=base_url, api_key="none", max_retries=0)
        content = [{"type": "image_url", "image_url": {"url": data_uri((30, 180, 40))}},
                   {"type": "text", "text": QUESTION}]
        reply = client.chat.completions.create(model=engine.model_name, temperature=0, max_tokens=6,
                                               messages=[{"role": "user", "content": content}])
        assert reply.choices[0].message.content == hf_greedy(vl_dirs["qwen2_vl"], sample_image((30, 180, 40))).strip()
        stream = client.chat.completions.create(model=engine.model_name, temperature=0, max_tokens=6, stream=True,
                                                messages=[{"role": "user", "content": content}])
        assert "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices) == \
            reply.choices[0].message.content
        with pytest.raises(openai.BadRequestError, match=r"no such file|not a readable image"):
            client.chat.completions.create(model=engine.model_name, max_tokens=2, messages=[{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "/nonexistent/x.png"}}, {"type": "text", "text": "hi"}]}])


def test_text_model_server_refuses_images(tiny_engine):
    import openai

    with live_server(tiny_engine) as base_url:
        client = openai.OpenAI(base_url=base_url, api_key="none", max_retries=0)
        with pytest.raises(openai.BadRequestError, match="text model"):
            client.chat.completions.create(model=tiny_engine.model_name, max_tokens=2, messages=[
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_uri((1, 2, 3))}},
                                             {"type": "text", "text": "hi"}]}])


def test_openai_client_sends_input_audio(tmp_path):
    import numpy as np
    import openai
    import soundfile
    import torch
    from transformers import AutoProcessor, Qwen2AudioForConditionalGeneration

    from swift.infer.engine import PtEngine

    model_dir = spread_weights(save_tiny("qwen2_audio", tmp_path / "audio", seed=3))
    buffer = io.BytesIO()
    clip = sample_audio(1.0)
    soundfile.write(buffer, clip, 16000, format="WAV")
    wav = base64.b64encode(buffer.getvalue()).decode()
    processor = AutoProcessor.from_pretrained(model_dir)
    messages = [{"role": "user", "content": [{"type": "audio", "audio": np.asarray(clip)},
                                             {"type": "text", "text": "What is this?"}]}]
    inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True,
                                           return_tensors="pt")
    model = Qwen2AudioForConditionalGeneration.from_pretrained(model_dir).eval()
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    expected = processor.tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()
    engine = PtEngine(str(model_dir))
    try:
        with live_server(engine) as base_url:
            client = openai.OpenAI(base_url=base_url, api_key="none", max_retries=0)
            reply = client.chat.completions.create(model=engine.model_name, temperature=0, max_tokens=5, messages=[
                {"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": wav, "format": "wav"}},
                                             {"type": "text", "text": "What is this?"}]}])
        assert reply.choices[0].message.content == expected
    finally:
        engine.close()


def test_swift_infer_pipe_takes_image(engines, vl_dirs, tmp_path):
    image = png_path(tmp_path, (30, 40, 200))
    run = subprocess.run([sys.executable, "-m", "swift.core.cli.main", "infer", "--model", str(vl_dirs["qwen2_vl"]),
                          "--image", image, "--temperature", "0", "--max_new_tokens", "6", "--torch_dtype", "float32"],
                         input=QUESTION + "\n", capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == hf_greedy(vl_dirs["qwen2_vl"], sample_image((30, 40, 200))).strip()


def test_video_frames_answer_as_transformers_generate(engines, vl_dirs, tmp_path):
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from swift.infer.protocol import RequestConfig

    colours = [(200, 30, 30), (30, 180, 40), (30, 40, 200), (10, 10, 10)]
    frames = [png_path(tmp_path, colour) for colour in colours]
    request = {"messages": [{"role": "user", "content": "<video>What happens?"}], "videos": [frames]}
    ours = engines["qwen2_vl"].infer([request], RequestConfig(temperature=0, max_tokens=6))[0]
    processor = AutoProcessor.from_pretrained(vl_dirs["qwen2_vl"])
    model = AutoModelForImageTextToText.from_pretrained(vl_dirs["qwen2_vl"]).eval()
    video = [sample_image(colour) for colour in colours]
    inputs = processor.apply_chat_template([{"role": "user", "content": [
        {"type": "video", "video": video}, {"type": "text", "text": "What happens?"}]}],
        add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    assert ours.usage.prompt_tokens == inputs["input_ids"].shape[1]
    expected = processor.tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert ours.choices[0].message.content == expected.strip()
    assert ours.choices[0].message.content  # not an empty answer compared with an empty one
