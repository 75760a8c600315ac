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
    ("[cat]", [("[cat]", 1.0)]),              # square brackets are text in the reference syntax
    ("([cat])", [("[cat]", 1.1)]),
    ("(a (b:1.5) c:1.2)", [("a ", 1.2), ("b", 1.5), (" c", 1.2)]),  # an explicit number replaces, not multiplies
    ("((a:0.5))", [("a", 0.5)]),
    ("(cat: 1.3 )", [("cat", 1.3)]),
    ("(cat:-0.5)", [("cat", -0.5)]),
    ("(cat:.5)", [("cat", 0.5)]),
    ("(x:abc)", [("x:abc", 1.1)]),
    ("(x:)", [("x:", 1.1)]),
    ("(:2)", [(":2", 1.1)]),                  # a colon first is text
    ("(a:(b))", [("a:", 1.1), ("b", 1.21)]),
    ("()", []),
    ("", []),
    ("(a)(b)", [("a", 1.1), ("b", 1.1)]),     # separate segments, tokenized separately
])
def test_parse(text, expected):
    assert P(text) == approx(expected)


@pytest.mark.parametrize("text, expected", [
    (r"\(cat\)", [("(cat)", 1.0)]),
    (r"\[cat\]", [(r"\[cat\]", 1.0)]),
    (r"(\(cat\):1.5)", [("(cat)", 1.5)]),
    (r"a\\b", [("a\\\\b", 1.0)]),
    (r"a\qb \: c", [(r"a\qb \: c", 1.0)]),
    ("a\\", [("a\\", 1.0)]),
])
def test_escapes(text, expected):
    assert P(text) == approx(expected)


@pytest.mark.parametrize("text, expected", [
    ("(cat", [("(cat", 1.0)]),
    ("cat)", [("cat)", 1.0)]),
    ("a) (b", [("a) (b", 1.0)]),
    ("a) (b) c", [("a) (b) c", 1.0)]),       # after a stray ")" the depth is below 0: the group is text
    ("(a]", [("(a]", 1.0)]),
    ("((a) b", [("((a) b", 1.0)]),           # unclosed outer group: all of it is text
    ("(a (b:1.5) c", [("(a (b:1.5) c", 1.0)]),
    ("x (a) y (b", [("x ", 1.0), ("a", 1.1), (" y ", 1.0), ("(b", 1.0)]),
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
    assert ids == tok.encode("a ") + tok.encode("red cat") + tok.encode(" [sits]")
    assert w.weights[1:1 + len(ids)] == [1.0, 1.5, 1.5] + [1.0] * (len(ids) - 3)
    assert w.is_weighted


def test_each_segment_is_tokenized_on_its_own(tok):
    (w,) = tokenize_weighted("(masterpiece), best quality", tok)
    assert content(w) == tok.encode("masterpiece") + tok.encode(", best quality")
    (joined,) = tokenize_weighted("(a)(b)", tok)
    assert content(joined) == tok.encode("a") + tok.encode("b")


def windows_by_hand(pieces, capacity=75, cut_from=8):
    """Independent: fill windows piece by piece; a piece that does not fit starts the next window, unless it has
    `cut_from` tokens or more, then it is cut at the window's end."""
    out, current = [], []
    for piece in pieces:
        piece = list(piece)
        while piece:
            room = capacity - len(current)
            if len(piece) <= room:
                current += piece
                piece = []
            else:
                if len(piece) >= cut_from:
                    current += piece[:room]
                    piece = piece[room:]
                out.append(current)
                current = []
    return out + [current]


def test_a_long_plain_prompt_is_cut_at_75_tokens_even_inside_a_word(tok):
    import random
    rng = random.Random(3)
    words = ["".join(rng.choice("bcdfghklmnprstvz") for _ in range(rng.randint(3, 12))) for _ in range(60)]
    text = " ".join(words)  # one segment: one piece of well over 8 tokens
    windows = tokenize_weighted(text, tok)
    ids = tok.encode(text)
    assert len(ids) > 150
    assert [content(w) for w in windows] == [ids[i:i + 75] for i in range(0, len(ids), 75)]
    for w in windows:
        assert w.tokens[0] == 49406 and w.tokens[w.end_index] == 49407 and len(w) == 77


def test_no_comma_rule(tok):
    text = ", ".join(["cat dog bird"] * 30)
    windows = tokenize_weighted(text, tok)
    assert len(content(windows[0])) == 75  # filled to the brim, whatever the commas


def test_short_pieces_move_whole_long_pieces_are_cut(tok):
    base = "(" + " ".join(["cat"] * 70) + ")"
    moved = tokenize_weighted(base + "123456", tok)            # a 6-token piece does not fit in the last 5
    assert len(content(moved[0])) == 70 and content(moved[1]) == tok.encode("123456")
    seven = tokenize_weighted(base + "1234567", tok)
    assert len(content(seven[0])) == 70 and content(seven[1]) == tok.encode("1234567")
    split = tokenize_weighted(base + "12345678", tok)           # 8 tokens: cut, 5 here and 3 in the next
    assert len(content(split[0])) == 75 and content(split[1]) == tok.encode("678")


def test_windows_match_a_piece_by_piece_fill(tok):
    import random
    rng = random.Random(11)
    parts = []
    for _ in range(40):
        words = " ".join(rng.choice(["cat", "red", "sky", "a", "photo", "123456", "1234567890"])
                         for _ in range(rng.randint(1, 5)))
        parts.append(f"({words}:1.2)" if rng.random() < 0.5 else words)
    text = " ".join(parts)
    pieces = [tok.encode(seg) for seg, _ in parse_prompt_weights(text)]
    pieces = [p for p in pieces if p]
    assert [content(w) for w in tokenize_weighted(text, tok)] == windows_by_hand(pieces)


def test_exactly_75_tokens_is_one_window(tok):
    text = " ".join(["cat"] * 75)
    assert len(tokenize_weighted(text, tok)) == 1
    assert len(tokenize_weighted(text + " cat", tok)) == 2


def test_weights_follow_tokens_across_windows(tok):
    text = " ".join(["cat"] * 70) + " (dog:1.4) " * 10
    windows = tokenize_weighted(text, tok)
    assert len(windows) == 2
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
    assert looked == ["style"]  # the reference's piece "a " comes first, then the embedding
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
    assert content(w) == tok.encode("a") + tok.encode("cat")
    assert len(warnings) == 1 and "nothere" in warnings[0]
    more = []
    (w,) = tokenize_weighted("embedding:gone, x", tok, lambda n: None, warnings=more)
    assert content(w) == tok.encode(", x") and "gone" in more[0]  # the comma goes on with the text


def test_embedding_needs_a_space_or_newline_before_it(tok):
    vec = torch.randn(1, 8)
    lookup = lambda n: vec if n == "style" else None  # noqa: E731
    (glued,) = tokenize_weighted("photo,embedding:style", tok, lookup)
    assert not any(isinstance(t, torch.Tensor) for t in content(glued))
    (newline,) = tokenize_weighted("photo\nembedding:style", tok, lookup)
    assert isinstance(content(newline)[-1], torch.Tensor)


def test_without_lookup_embedding_is_text(tok):
    (w,) = tokenize_weighted("embedding:foo", tok)
    assert content(w) == tok.encode("embedding:foo")
