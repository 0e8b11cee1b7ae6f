"""harness.text: CLIP4Clip's tokenisation (DATASETS.md §1.5)."""
from __future__ import annotations

import pytest
import torch

from harness.text import EOT_ID, SOT_ID, bpe_ids, tokenize


def test_special_ids() -> None:
    assert (SOT_ID, EOT_ID) == (49406, 49407)


def test_short_captions_hand_checked() -> None:
    # ids from OpenAI CLIP's README example: clip.tokenize(["a diagram", "a dog", "a cat"])
    out = tokenize(["a diagram", "a dog", "a cat"], max_words=8)
    expected = torch.tensor([
        [49406, 320, 22697, 49407, 0, 0, 0, 0],
        [49406, 320, 1929, 49407, 0, 0, 0, 0],
        [49406, 320, 2368, 49407, 0, 0, 0, 0],
    ])
    assert out.dtype == torch.long
    assert torch.equal(out, expected)


def test_single_string_and_shape() -> None:
    out = tokenize("a dog", max_words=32)
    assert out.shape == (1, 32)
    assert out[0, :4].tolist() == [49406, 320, 1929, 49407]
    assert out[0, 4:].eq(0).all()


def test_lower_casing_and_whitespace() -> None:
    assert torch.equal(tokenize(["A  DOG\n"], 6), tokenize(["a dog"], 6))


def test_truncation_keeps_max_words_minus_2_bpe_tokens_then_eot() -> None:
    text = " ".join(["dog"] * 10 + ["cat"] * 10)  # one BPE token per word
    ids = bpe_ids(text)
    assert ids == [1929] * 10 + [2368] * 10
    out = tokenize([text], max_words=12)[0].tolist()
    assert len(out) == 12
    assert out[0] == 49406 and out[-1] == 49407
    assert out[1:11] == [1929] * 10  # exactly max_words-2 BPE tokens, the first ones
    assert 0 not in out


def test_exact_fit_is_not_truncated() -> None:
    out = tokenize(["dog dog dog"], max_words=5)[0].tolist()
    assert out == [49406, 1929, 1929, 1929, 49407]


def test_argmax_is_eot_position() -> None:
    out = tokenize(["a dog", "dog " * 40], max_words=32)
    assert out.argmax(dim=-1).tolist() == [3, 31]


@pytest.mark.parametrize("bad", [2, 78])
def test_bad_max_words(bad: int) -> None:
    with pytest.raises(ValueError, match="max_words"):
        tokenize(["a dog"], bad)
