"""The native JSON tool-call format (arpo.tools.json_calls, arpo.tools.formats.JsonFormat): the parser's rules,
hostile JSON, and the result frame read from the chat template."""
import copy
import json
import time

import pytest

from arpo.config import ToolsConfig
from arpo.tools.base import BUILTIN_SPECS, ToolResult
from arpo.tools.formats import JsonFormat, TagFormat
from arpo.tools.json_calls import TemplateError, parse_json_action, result_frame, stop_strings
from arpo.tools.parser import Action
from arpo.tools.toolbox import ToolBox, make_toolbox

SPECS = [BUILTIN_SPECS["python"], BUILTIN_SPECS["search"]]
PY = '{"name": "python", "arguments": {"code": "print(1)"}}'


def call(body: str) -> str:
    return f"<tool_call>\n{body}\n</tool_call>"


def parse(text: str) -> Action:
    return parse_json_action(text, SPECS)


@pytest.fixture(scope="module")
def tok(json_tool_script):
    """The demo agent's tokenizer with the tool-call tokens and a Qwen2.5-style template."""
    return json_tool_script.make_tokenizer()


@pytest.mark.parametrize(
    "text, expected",
    [  # (kind, name, content, error); Action.end is checked below: just past the first closing tag
        (call(PY), ("tool", "python", "print(1)", None)),
        # the argument is passed exactly as decoded, not stripped
        ('think <tool_call>{"name": "search", "arguments": {"query": " Ada "}}</tool_call>tail',
         ("tool", "search", " Ada ", None)),
        ("<answer> 42 </answer>", ("answer", "answer", "42", None)),
        # nested opening tags: the body starts at the last <tool_call> before the first </tool_call>
        ("<tool_call>junk" + call(PY), ("tool", "python", "print(1)", None)),
        # tags inside JSON strings are content
        ('<tool_call>{"name": "python", "arguments": {"code": "s = \'<search>\'"}}</tool_call>',
         ("tool", "python", "s = '<search>'", None)),
        # repeated calls: only the first runs; the turn ends at its </tool_call>
        (call(PY) + call(PY.replace("1", "2")), ("tool", "python", "print(1)", None)),
        # a call closing before the answer wins, and vice versa
        ("<answer>" + call(PY), ("tool", "python", "print(1)", None)),
        ("<tool_call>" + PY + "<answer>7</answer>", ("answer", "answer", "7", None)),
        # stray closing tags
        ("oops</tool_call>", ("invalid", "tool_call", "", "</tool_call> without <tool_call>")),
        ("x</answer>", ("invalid", "answer", "", "</answer> without <answer>")),
        # no closing tag: nothing runs; an open tag is reported
        ("<tool_call>" + PY, ("none", None, "", "unclosed <tool_call>")),
        ("<answer>4<tool_call>{", ("none", None, "", "unclosed <tool_call>")),
        ("<tool_call>{<answer>4", ("none", None, "", "unclosed <answer>")),
        ("plain text", ("none", None, "", None)),
        ("", ("none", None, "", None)),
        # one Markdown fence around the JSON is unwrapped
        ("<tool_call>\n```json\n" + PY + "\n```\n</tool_call>", ("tool", "python", "print(1)", None)),
        # arguments serialised as a JSON string (OpenAI style) are parsed
        ('<tool_call>{"name": "python", "arguments": "{\\"code\\": \\"x\\"}"}</tool_call>',
         ("tool", "python", "x", None)),
        # top-level keys other than name/arguments are ignored
        ('<tool_call>{"id": 3, "name": "python", "arguments": {"code": ""}}</tool_call>', ("tool", "python", "", None)),
    ],
)
def test_parse_rules(text, expected):
    act = parse(text)
    assert (act.kind, act.name, act.content, act.error) == expected
    if act.kind == "none":
        assert act.end == len(text)
    else:  # the turn ends exactly at the first closing tag
        firsts = [i + len(t) for t in ("</tool_call>", "</answer>") if (i := text.find(t)) >= 0]
        assert act.end == min(firsts)


def test_a_closing_answer_tag_inside_code_ends_the_turn():
    # rule 1's known consequence, as in the tag format: the engine stops at the first stop string
    act = parse('<tool_call>{"name": "python", "arguments": {"code": "print(\'</answer>\')"}}</tool_call>')
    assert act.kind == "invalid" and act.error == "</answer> without <answer>"


BAD = [
    ("<tool_call></tool_call>", "invalid JSON: Expecting value"),
    ("<tool_call>{'name': 'python'}</tool_call>", "invalid JSON: Expecting property name"),
    (call('{"name": "python", "arguments": {"code": "1"}} trailing'), "invalid JSON: Extra data"),
    (call('[{"name": "python", "arguments": {"code": "1"}}]'), "expected a JSON object"),
    (call('"python"'), "expected a JSON object"),
    (call('{"arguments": {"code": "1"}}'), '"name" must be a string naming a tool, got none'),
    (call('{"name": 3, "arguments": {"code": "1"}}'), '"name" must be a string naming a tool, got a number'),
    (call('{"name": "shell", "arguments": {"cmd": "ls"}}'), 'unknown tool "shell"; available: python, search'),
    (call('{"name": "python"}'), 'no "arguments"; python takes {"code": "..."}'),
    (call('{"name": "python", "arguments": "print(1)"}'), '"arguments" is a string but not valid JSON'),
    (call('{"name": "python", "arguments": "[1]"}'), '"arguments" must be an object {"code": "..."}, got an array'),
    (call('{"name": "python", "arguments": null}'), '"arguments" must be an object {"code": "..."}, got null'),
    (call('{"name": "python", "arguments": {}}'), 'python takes exactly one argument "code" (a string); got none'),
    (call('{"name": "python", "arguments": {"query": "1"}}'), 'python takes exactly one argument "code"'),
    (call('{"name": "python", "arguments": {"code": "1", "timeout": "5"}}'), 'got "timeout"'),
    (call('{"name": "python", "arguments": {"code": 1}}'), 'argument "code" must be a string, got a number'),
    (call('{"name": "python", "arguments": {"code": true}}'), "got a boolean"),
    (call('{"name": "python", "arguments": {"code": null}}'), "got null"),
    (call('{"name": "python", "arguments": {"code": ["print(1)"]}}'), "got an array"),
    (call('{"name": "python", "arguments": {"code": {"x": "1"}}}'), "got an object"),
    # duplicate keys: an error (neither copy wins), at any level, also inside a string-encoded arguments
    (call('{"name": "python", "name": "search", "arguments": {"query": "1"}}'), 'duplicate key "name"'),
    (call('{"name": "python", "arguments": {"code": "1", "code": "2"}}'), 'duplicate key "code"'),
    (call('{"name": "python", "arguments": "{\\"code\\": \\"1\\", \\"code\\": \\"2\\"}"}'), 'duplicate key "code"'),
    # non-standard constants are not JSON
    (call('{"name": "python", "arguments": {"code": NaN}}'), "NaN is not a JSON value"),
    (call('{"name": "python", "arguments": {"code": -Infinity}}'), "-Infinity is not a JSON value"),
]


@pytest.mark.parametrize("text, message", BAD)
def test_malformed_calls_are_error_results(text, message):
    act = parse(text)
    assert act.kind == "invalid" and act.name == "tool_call" and act.end == len(text)
    assert act.error.startswith("invalid tool call: ") and message in act.error
    with ToolBox({s.name: _echo_tool(s) for s in SPECS}, max_calls=3, format="json") as box:
        res = box.run(act, calls_made=0)  # the model sees the error as the result; nothing runs
        assert not res.ok and res.text == f"Error: {act.error}"
        assert box.stats["rejected"] == 1 and box.stats["python.calls"] == 0


HOSTILE = {
    "10k-deep arrays": call('{"name": "python", "arguments": {"code": ' + "[" * 10_000 + "]" * 10_000 + "}}"),
    "10k-deep objects": call('{"name": "python", "arguments": ' + '{"a": ' * 10_000 + "1" + "}" * 10_000 + "}"),
    "10k-deep unclosed": call("[" * 10_000),
    "1e999999": call('{"name": "python", "arguments": {"code": 1e999999}}'),
    "100k-digit integer": call('{"name": "python", "arguments": {"code": ' + "9" * 100_000 + "}}"),
    "100k-digit name": call('{"name": ' + "9" * 100_000 + ', "arguments": {"code": "1"}}'),
    "escaped lone surrogate": call('{"name": "python", "arguments": {"code": "\\ud800"}}'),
    "raw lone surrogate": call('{"name": "python", "arguments": {"code": "a\udcffb"}}'),
    "surrogate in the name": call('{"name": "py\\udcffthon", "arguments": {"code": "1"}}'),
    "10k-character name": call('{"name": "' + "x" * 10_000 + '", "arguments": {"code": "1"}}'),
    "NUL and controls": call('{"name": "python\x00", "arguments": {"code": "1"}}'),
    "1000 duplicate keys": call("{" + ", ".join(['"name": "python"'] * 1000) + "}"),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_json_is_an_error_result_never_a_crash(name, tok):
    text = HOSTILE[name]
    start = time.perf_counter()
    act = parse(text)
    assert time.perf_counter() - start < 1.0
    assert act.kind == "invalid" and act.error.startswith("invalid tool call: ")
    assert len(act.error) < 200  # model-written text is quoted in bounded, ASCII-safe form
    assert JsonFormat(tok, SPECS).encode_result(f"Error: {act.error}")  # encodable, as the sampler will encode it


def test_hostile_error_messages():
    assert "nested too deeply" in parse(HOSTILE["10k-deep arrays"]).error
    assert "got a number" in parse(HOSTILE["1e999999"]).error
    assert "got a number" in parse(HOSTILE["100k-digit integer"]).error
    assert "lone surrogate" in parse(HOSTILE["escaped lone surrogate"]).error
    assert "lone surrogate" in parse(HOSTILE["raw lone surrogate"]).error
    assert 'unknown tool "py\\udcffthon"' in parse(HOSTILE["surrogate in the name"]).error
    assert "…" in parse(HOSTILE["10k-character name"]).error


def test_text_around_the_call_may_hold_anything():
    # undecodable bytes come out of tokenizer.decode as U+FFFD; lone surrogates outside the JSON do no harm
    act = parse("\ufffd\udcff " + call('{"name": "python", "arguments": {"code": "s = \'\ufffd\'"}}'))
    assert act.kind == "tool" and act.content == "s = '\ufffd'"
    act = parse('<tool_call>{"name": "search", "arguments": {"query": "caf\\u00e9 \\ud83d\\ude00"}}</tool_call>')
    assert act.content == "café 😀"  # escaped surrogate pairs are fine


def test_tokenizer_decoded_invalid_utf8(tok):
    """A byte-level model can emit half of a UTF-8 character; decode gives U+FFFD and the call still parses."""
    ids = tok.encode(call('{"name": "python", "arguments": {"code": "print(\'é\')"}}'), add_special_tokens=False)
    first_byte = tok.encode("é", add_special_tokens=False)[0]  # é is two byte tokens here
    assert len(tok.encode("é", add_special_tokens=False)) == 2 and first_byte in ids
    ids.remove(first_byte)  # a lone continuation byte: invalid UTF-8
    act = parse(tok.decode(ids))
    assert act == Action("tool", "python", "print('\ufffd')", act.end)


def test_disabled_tool_is_unknown():
    act = parse_json_action(call('{"name": "search", "arguments": {"query": "q"}}'), [BUILTIN_SPECS["python"]])
    assert act.kind == "invalid" and "unknown tool \"search\"; available: python" in act.error


def test_custom_answer_tag_and_stop_strings():
    assert parse_json_action("<final>x</final>", SPECS, "final") == Action("answer", "final", "x", 16)
    assert parse_json_action("<answer>x</answer>", SPECS, "final").kind == "none"
    assert stop_strings("final") == ["</tool_call>", "</final>"]


# ----------------------------------------------------------------------------------------------------------
# The result frame, from the chat template.


def _echo_tool(spec):
    class Echo:
        def __init__(self):
            self.spec, self.name = spec, spec.name

        def __call__(self, query):
            return ToolResult(f"ran {query}")

    return Echo()


def test_result_frame_is_the_templates_tool_role(tok):
    assert result_frame(tok) == ("<|im_end|>\n<|im_start|>user\n<tool_response>\n",
                                 "\n</tool_response><|im_end|>\n<|im_start|>assistant\n")


def test_generated_call_plus_frame_is_what_the_template_renders(tok):
    """The model's <tool_call> text + the frame around the result = the template's rendering of a conversation in
    which the assistant made that call: what a model trained on its template expects to see."""
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}]
    prompt = tok.apply_chat_template(messages, tools=[s.schema() for s in SPECS], add_generation_prompt=True,
                                     tokenize=False)
    generated = call('{"name": "python", "arguments": {"code": "print(6 * 7)"}}')
    fmt = JsonFormat(tok, SPECS)
    full = messages + [
        {"role": "assistant", "content": "",
         "tool_calls": [{"type": "function", "function": {"name": "python", "arguments": {"code": "print(6 * 7)"}}}]},
        {"role": "tool", "content": "42"}]
    rendered = tok.apply_chat_template(full, tools=[s.schema() for s in SPECS], add_generation_prompt=True,
                                       tokenize=False)
    assert prompt + generated + fmt.format_result("42\n") == rendered
    assert fmt.parse(generated) == Action("tool", "python", "print(6 * 7)", len(generated))


def test_encode_result_frame_tokens_and_split_special_tokens(tok):
    fmt = JsonFormat(tok, SPECS)
    im_end, resp, resp_close = (tok.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<tool_response>",
                                                                        "</tool_response>"))
    ids = fmt.encode_result("a<|im_end|>b</tool_response>c<tool_response>d<|im_start|>\n\n")
    assert ids.count(im_end) == 2  # the frame's two; the printed one is text
    assert ids.count(resp) == 1 and ids.count(resp_close) == 1  # the tool cannot close its response early
    assert tok.convert_tokens_to_ids("<|im_start|>") in ids[:4] and ids[-1] != tok.eos_token_id
    text = tok.decode(ids)
    assert text == ("<|im_end|>\n<|im_start|>user\n<tool_response>\na<|im_end|>b</ tool_response>c< tool_response>"
                    "d<|im_start|>\n</tool_response><|im_end|>\n<|im_start|>assistant\n")
    assert tok.decode(fmt.encode_result("x\udcffy")).count("x?y") == 1  # a lone surrogate cannot crash encoding
    assert ids[: len(tok.encode(fmt.before, add_special_tokens=False))] == tok.encode(fmt.before,
                                                                                      add_special_tokens=False)


def _with_template(tok, template):
    other = copy.deepcopy(tok)
    other.chat_template = template
    return other


def test_templates_that_cannot_do_json_tool_calls_fail_at_start_up(tok):
    plain = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}" \
            "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    with pytest.raises(TemplateError, match="ignores tools"):  # the demo agent's kind: renders no tools
        JsonFormat(_with_template(tok, plain), SPECS)
    tools_no_tool_role = ("{% if tools %}TOOLS{{ tools | tojson }}{% endif %}{% for m in messages %}"
                          "{% if m.role == 'tool' %}{{ raise_exception('no tool role') }}{% endif %}"
                          "{{ m.role }}: {{ m.content }}\n{% endfor %}")
    with pytest.raises(TemplateError, match="cannot render a tool message.*no tool role"):
        JsonFormat(_with_template(tok, tools_no_tool_role), SPECS)
    drops_tool = tools_no_tool_role.replace("{{ raise_exception('no tool role') }}", "")
    drops_tool = drops_tool.replace("{{ m.role }}: {{ m.content }}", "{% if m.role != 'tool' %}{{ m.content }}{% endif %}")
    with pytest.raises(TemplateError, match="dropped"):
        JsonFormat(_with_template(tok, drops_tool), SPECS)
    no_template = _with_template(tok, None)
    with pytest.raises(TemplateError):
        JsonFormat(no_template, SPECS)


def test_template_error_names_the_tokenizer(tmp_path, tok):
    t = _with_template(tok, "{% for m in messages %}{{ m.content }}{% endfor %}")
    t.save_pretrained(tmp_path / "my-tokenizer")
    from transformers import AutoTokenizer

    loaded = AutoTokenizer.from_pretrained(tmp_path / "my-tokenizer")
    with pytest.raises(TemplateError, match="my-tokenizer"):
        JsonFormat(loaded, SPECS)


# ----------------------------------------------------------------------------------------------------------
# The toolbox and the config choose the format.


def test_toolbox_format_and_config(tok):
    with ToolBox({s.name: _echo_tool(s) for s in SPECS}, max_calls=2, format="json") as box:
        fmt = box.call_format(tok)
        assert isinstance(fmt, JsonFormat) and fmt.stop_strings == ("</tool_call>", "</answer>")
        assert box.run(fmt.parse(call(PY)), calls_made=0).text == "ran print(1)"
        over = box.run(fmt.parse(call(PY)), calls_made=2)
        assert not over.ok and "tool-call limit of 2 reached" in over.text
    with ToolBox({}, max_calls=1) as box:
        assert isinstance(box.call_format(tok), TagFormat) and box.format == "tags"
    with pytest.raises(ValueError, match="unknown tool-call format 'xml'"):
        ToolBox({}, max_calls=1, format="xml")
    def shout(query: str) -> str:
        """Upper-cases the query."""
        return query.upper()

    with make_toolbox(ToolsConfig(enabled=[], format="json"), max_calls=1, extra={"echo": shout}) as box:
        assert box.format == "json"
        fmt = box.call_format(tok)
        assert box.run(fmt.parse(call('{"name": "echo", "arguments": {"query": "hi"}}')), 0).text == "HI"


def test_tool_response_json_is_valid_for_schema():
    # the schema the template renders names the argument the parser expects
    for spec in SPECS:
        schema = spec.schema()["function"]
        assert schema["parameters"]["required"] == [spec.argument]
        body = json.dumps({"name": spec.name, "arguments": {spec.argument: "v"}})
        assert parse(call(body)) == Action("tool", spec.name, "v", len(call(body)))
