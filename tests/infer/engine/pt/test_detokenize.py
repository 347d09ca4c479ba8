"""Incremental detokenizing: the pieces add up to the whole decode, stop strings cut, nothing cut is ever sent."""

from __future__ import annotations

from swift.infer.engine.pt.detokenize import Detokenizer

TEXT = "Héllo wörld — naïve café 😀 日本語 text, with   spaces.\nNew line!"


def test_pieces_add_up_to_decode(smollm2_tokenizer):
    ids = smollm2_tokenizer.encode(TEXT, add_special_tokens=False)
    detokenizer = Detokenizer(smollm2_tokenizer, smollm2_tokenizer.encode("<|im_start|>assistant\n"))
    pieces = []
    for token_id in ids:
        assert not detokenizer.add(token_id)
        pieces.append(detokenizer.take(final=False))
    pieces.append(detokenizer.take(final=True))
    assert "".join(pieces) == smollm2_tokenizer.decode(ids) == TEXT
    assert all("\ufffd" not in piece for piece in pieces)  # no half characters on the way


def test_a_stop_string_across_tokens_cuts_and_is_never_sent(smollm2_tokenizer):
    ids = smollm2_tokenizer.encode(TEXT, add_special_tokens=False)
    detokenizer = Detokenizer(smollm2_tokenizer, [], stop=("café 😀",))
    sent = ""
    for token_id in ids:
        stopped = detokenizer.add(token_id)
        sent += detokenizer.take(final=stopped)
        if stopped:
            break
    assert stopped
    assert sent == "Héllo wörld — naïve "
