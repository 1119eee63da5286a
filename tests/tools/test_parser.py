"""The tag rules of arpo.tools.parser: which call runs when tags are unclosed, nested, repeated or stray."""
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, processors, decoders, trainers
from transformers import PreTrainedTokenizerFast

from arpo.tools.parser import Action, encode_result, format_result, parse_action, stop_strings

TOOLS = ("python", "search")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("<python>print(1)</python>", Action("tool", "python", "print(1)", 25)),
        ("think\n<search> Ada Lovelace </search>tail", Action("tool", "search", "Ada Lovelace", 37)),
        ("<answer>42</answer>", Action("answer", "answer", "42", 19)),
        # nested same tag: the last opening before the first closing
        ("<python>a<python>b</python>", Action("tool", "python", "b", 27)),
        # other tags inside a call are content
        ('<python>s = "<search>"</python>', Action("tool", "python", 's = "<search>"', 31)),
        # repeated calls: only the first runs, the rest is cut off at end
        ("<python>a</python><python>b</python>", Action("tool", "python", "a", 18)),
        # a tool call closing before the answer wins, and vice versa
        ("<answer><python>x</python>", Action("tool", "python", "x", 26)),
        ("<python>x<answer>7</answer>", Action("answer", "answer", "7", 27)),
        # stray closing tag: invalid, no call
        ("oops</python>", Action("invalid", "python", "", 13, "</python> without <python>")),
        ("<search>q</python>", Action("invalid", "python", "", 18, "</python> without <python>")),
        # no closing tag: nothing runs; an open tag is reported
        ("<python>while True: pass", Action("none", None, "", 24, "unclosed <python>")),
        ("<search>a</search", Action("none", None, "", 17, "unclosed <search>")),
        ("<python>x<search>y", Action("none", None, "", 18, "unclosed <search>")),
        ("plain text", Action("none", None, "", 10, None)),
        ("", Action("none", None, "", 0, None)),
        ("<python></python>", Action("tool", "python", "", 17)),
        # one Markdown fence around python code is unwrapped; a search query is taken as written
        ("<python>\n```python\nprint(1)\n```\n</python>", Action("tool", "python", "print(1)", 41)),
        ("<python>```\na\nb\n```</python>", Action("tool", "python", "a\nb", 28)),
        ("<python>x = '```'</python>", Action("tool", "python", "x = '```'", 26)),
        ("<search>```q```</search>", Action("tool", "search", "```q```", 24)),
    ],
)
def test_parse_action_rules(text, expected):
    act = parse_action(text, TOOLS)
    assert act == expected
    if act.kind == "none":
        assert act.end == len(text)
    else:  # the turn ends exactly at its closing tag
        assert text[: act.end].endswith(f"</{act.name}>")


def test_disabled_tool_is_plain_text():
    act = parse_action("<search>q</search><python>1</python>", ("python",))
    assert act == Action("tool", "python", "1", 36)


def test_custom_answer_tag():
    assert parse_action("<final>x</final>", TOOLS, "final") == Action("answer", "final", "x", 16)
    assert parse_action("<answer>x</answer>", TOOLS, "final").kind == "none"
    assert stop_strings(TOOLS, "final") == ["</python>", "</search>", "</final>"]


def test_format_result_escapes_result_tags():
    out = format_result("a</result>b<result>c")
    assert out.count("</result>") == 1 and out.endswith("</result>\n")
    assert out.count("<result>") == 1 and out.startswith("\n<result>\n")
    assert format_result("12\n\n") == "\n<result>\n12\n</result>\n"


def _bos_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE whose post-processor adds <s> (BOS), with the result tags as added tokens."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<s>", "<result>", "</result>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["the result is 17", "print(3 * 4)"], trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>")


def test_encode_result_has_no_bos_and_round_trips():
    tok = _bos_tokenizer()
    assert tok.encode("x")[0] == tok.bos_token_id  # the tokenizer does add BOS by default ...
    ids = encode_result(tok, "17")
    assert tok.bos_token_id not in ids  # ... but never to a tool result
    assert ids[1] == tok.convert_tokens_to_ids("<result>")
    assert tok.decode(ids) == "\n<result>\n17\n</result>\n"


def test_encode_result_keeps_special_token_text_as_text():
    tok = _bos_tokenizer()
    ids = encode_result(tok, "x<s>y</result>z")
    assert ids.count(tok.bos_token_id) == 0  # the printed "<s>" is plain text, not the BOS token
    assert ids.count(tok.convert_tokens_to_ids("</result>")) == 1  # only the frame's closing tag
    assert tok.decode(ids) == format_result("x<s>y</result>z")


def test_encode_result_replaces_lone_surrogates():
    # the tokenizer refuses str with lone surrogates (a tool that decoded bytes with surrogateescape): "?" instead
    tok = _bos_tokenizer()
    assert tok.decode(encode_result(tok, "x\udcffy")) == "\n<result>\nx?y\n</result>\n"
