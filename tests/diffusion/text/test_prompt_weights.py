"""Emphasis parsing and the 77-token windows."""
import pytest
import torch

from diffusion.text.prompt_weights import TokenWindow, empty_window, parse_prompt_weights, tokenize_weighted
from diffusion.text.tokenizer import default_tokenizer

P = parse_prompt_weights


def approx(segments):
    return [(t, pytest.approx(w)) for t, w in segments]


@pytest.mark.parametrize("text, expected", [
    ("a photo of a cat", [("a photo of a cat", 1.0)]),
    ("a (cat:1.2) dog", [("a ", 1.0), ("cat", 1.2), (" dog", 1.0)]),
    ("(cat)", [("cat", 1.1)]),
    ("((cat))", [("cat", 1.21)]),
    ("(((cat)))", [("cat", 1.331)]),
    ("[cat]", [("cat", 1 / 1.1)]),
    ("[[cat]]", [("cat", 1 / 1.21)]),
    ("([cat])", [("cat", 1.0)]),
    ("(a (b:1.5) c:1.2)", [("a ", 1.2), ("b", 1.8), (" c", 1.2)]),
    ("((a:0.5))", [("a", 0.55)]),
    ("(cat: 1.3 )", [("cat", 1.3)]),
    ("(cat:-0.5)", [("cat", -0.5)]),
    ("(cat:.5)", [("cat", 0.5)]),
    ("(x:abc)", [("x:abc", 1.1)]),
    ("(x:)", [("x:", 1.1)]),
    ("(a:(b))", [("a:", 1.1), ("b", 1.21)]),
    ("()", []),
    ("", []),
    ("(a)(b)", [("ab", 1.1)]),
])
def test_parse(text, expected):
    assert P(text) == approx(expected)


@pytest.mark.parametrize("text, expected", [
    (r"\(cat\)", [("(cat)", 1.0)]),
    (r"\[cat\]", [("[cat]", 1.0)]),
    (r"(\(cat\):1.5)", [("(cat)", 1.5)]),
    (r"a\\b", [("a\\b", 1.0)]),
    (r"a\qb \: c", [(r"a\qb \: c", 1.0)]),
    ("a\\", [("a\\", 1.0)]),
])
def test_escapes(text, expected):
    assert P(text) == approx(expected)


@pytest.mark.parametrize("text, expected", [
    ("(cat", [("(cat", 1.0)]),
    ("cat)", [("cat)", 1.0)]),
    ("a) (b", [("a) (b", 1.0)]),
    ("[cat", [("[cat", 1.0)]),
    ("cat]", [("cat]", 1.0)]),
    ("(a]", [("(a]", 1.0)]),
    ("[a)]", [("a)", 1 / 1.1)]),
    ("((a) b", [("(", 1.0), ("a", 1.1), (" b", 1.0)]),
    ("(a (b:1.5) c", [("(a ", 1.0), ("b", 1.5), (" c", 1.0)]),
    ("))((", [("))((", 1.0)]),
])
def test_unbalanced_is_literal(text, expected):
    assert P(text) == approx(expected)


def test_never_raises_on_garbage():
    import random
    rng = random.Random(7)
    for _ in range(500):
        text = "".join(rng.choice("()[]:\\ab1.2 ,") for _ in range(rng.randint(0, 30)))
        segments = P(text)
        assert all(isinstance(t, str) and t and isinstance(w, float) for t, w in segments)


def test_embedding_words_keep_their_weight():
    assert P("(embedding:foo:1.3), bar") == approx([("embedding:foo", 1.3), (", bar", 1.0)])
    assert P("(embedding:foo)") == approx([("embedding:foo", 1.1)])


# -- windows ----------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tok():
    return default_tokenizer()


def content(window: TokenWindow):
    return window.tokens[1:window.end_index]


def test_single_window_layout(tok):
    (w,) = tokenize_weighted("a photo of a cat", tok)
    assert len(w) == 77 and len(w.weights) == 77
    assert w.tokens[:7] == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert w.end_index == 6 and w.tokens[7:] == [49407] * 70
    assert not w.is_weighted
    (w0,) = tokenize_weighted("a photo of a cat", tok, pad_token=0)
    assert w0.tokens[7:] == [0] * 70 and w0.tokens[6] == 49407


def test_empty_prompt_is_one_window(tok):
    (w,) = tokenize_weighted("", tok, pad_token=0)
    assert w.tokens == empty_window(49406, 49407, 0).tokens
    assert w.end_index == 1


def test_weights_per_token(tok):
    (w,) = tokenize_weighted("a (red cat:1.5) [sits]", tok)
    ids = content(w)
    assert ids == tok.encode("a red cat sits")
    assert w.weights[:6] == [1.0, 1.0, 1.5, 1.5, pytest.approx(1 / 1.1), 1.0]
    assert w.is_weighted


def test_segments_split_words_like_text(tok):
    (w,) = tokenize_weighted("(masterpiece), best quality", tok)
    assert content(w) == tok.encode("masterpiece, best quality")


def test_long_prompt_breaks_at_word_boundary(tok):
    import random
    rng = random.Random(3)
    words = ["".join(rng.choice("bcdfghklmnprstvz") for _ in range(rng.randint(3, 12))) for _ in range(60)]
    text = " ".join(words)
    windows = tokenize_weighted(text, tok, comma_backtrack=0)
    assert len(windows) >= 2
    joined = []
    for w in windows:
        c = content(w)
        assert 0 < len(c) <= 75
        assert w.tokens[0] == 49406 and w.tokens[w.end_index] == 49407 and len(w) == 77
        joined += c
        # every window ends at a word boundary: decoding its content gives whole words from the prompt
        assert set(tok.decode(c).split()) <= set(words)
    assert joined == tok.encode(text)


def test_long_prompt_prefers_comma(tok):
    # "cat dog bird," is 4 tokens: 18 groups fill 72, then "cat dog" (74) and "bird," no longer fits. The plain cut
    # falls there; with comma backtracking the two words after the last comma move to the next window.
    text = ", ".join(["cat dog bird"] * 30)
    windows = tokenize_weighted(text, tok, comma_backtrack=20)
    first = content(windows[0])
    assert first[-1] == tok.comma_id and len(first) == 72
    all_tokens = [t for w in windows for t in content(w)]
    assert all_tokens == tok.encode(text)
    plain = tokenize_weighted(text, tok, comma_backtrack=0)
    assert len(content(plain[0])) == 74 and content(plain[0])[-1] != tok.comma_id
    assert len(tokenize_weighted(text, tok, comma_backtrack=1)[0].tokens) == 77
    assert len(content(tokenize_weighted(text, tok, comma_backtrack=1)[0])) == 74  # comma too far back


def test_exactly_75_tokens_is_one_window(tok):
    text = " ".join(["cat"] * 75)
    assert len(tokenize_weighted(text, tok)) == 1
    assert len(tokenize_weighted(text + " cat", tok)) == 2


def test_overlong_word_is_split(tok):
    text = "x" + "😀" * 100  # one "word" far longer than a window
    windows = tokenize_weighted(text, tok)
    assert len(windows) >= 2
    assert len(content(windows[0])) == 75
    assert [t for w in windows for t in content(w)] == tok.encode(text)


def test_short_words_move_whole_long_words_split(tok):
    base = " ".join(["cat"] * 70) + " "
    assert tok.encode("123456") == [272, 273, 274, 275, 276, 277]  # digits are single tokens, one word here
    moved = tokenize_weighted(base + "123456", tok)
    assert len(content(moved[0])) == 70 and content(moved[1]) == tok.encode("123456")
    split = tokenize_weighted(base + "1234567890", tok, max_word_tokens=8)
    assert len(content(split[0])) == 75 and content(split[1]) == tok.encode("67890")


def test_weights_follow_tokens_across_windows(tok):
    text = " ".join(["cat"] * 70) + " (dog:1.4) " * 10
    windows = tokenize_weighted(text, tok)
    pairs = [(t, wt) for w in windows for t, wt in zip(content(w), w.weights[1:w.end_index])]
    assert [wt for t, wt in pairs if t == tok.encode("dog")[0]] == [1.4] * 10
    assert all(wt == 1.0 for t, wt in pairs if t == tok.encode("cat")[0])


def test_embedding_vectors_become_tokens(tok):
    vec = torch.randn(3, 16)
    looked = []

    def lookup(name):
        looked.append(name)
        return vec if name == "style" else None

    (w,) = tokenize_weighted("a (embedding:style:1.2), cat", tok, lookup)
    assert looked == ["style"]
    c = content(w)
    assert c[0] == 320 and all(isinstance(t, torch.Tensor) for t in c[1:4]) and c[4:] == tok.encode(", cat")
    assert torch.equal(torch.stack(c[1:4]), vec)
    assert w.weights[2:5] == [1.2, 1.2, 1.2]
    assert w.ids(placeholder=0)[2:5] == [0, 0, 0]
    assert [i for i, _ in w.embedding_slots()] == [2, 3, 4]


def test_embedding_with_trailing_comma(tok):
    vec = torch.randn(1, 8)
    (w,) = tokenize_weighted("embedding:style, cat", tok, lambda n: vec if n == "style" else None)
    c = content(w)
    assert isinstance(c[0], torch.Tensor) and c[1:] == tok.encode(", cat")


def test_missing_embedding_is_reported_and_dropped(tok):
    warnings = []
    (w,) = tokenize_weighted("a embedding:nothere cat", tok, lambda n: None, warnings=warnings)
    assert content(w) == tok.encode("a cat")
    assert len(warnings) == 1 and "nothere" in warnings[0]


def test_without_lookup_embedding_is_text(tok):
    (w,) = tokenize_weighted("embedding:foo", tok)
    assert content(w) == tok.encode("embedding:foo")
