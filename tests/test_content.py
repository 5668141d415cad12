"""Knowledge files are read once per process: later reads come from memory, checked content included."""
from bot.content import load_yaml


def test_a_knowledge_file_is_read_once_and_parsed_once(tmp_path):
    """The first read's content (after parse) is what every later read returns, even if the file changes."""
    path = tmp_path / "words.yml"
    path.write_text("greeting: hello\n", encoding="utf-8")
    parsed = []

    def parse(data):
        parsed.append(data)
        return {key.upper(): value for key, value in data.items()}

    first = load_yaml(path, parse)
    path.write_text("greeting: changed\n", encoding="utf-8")
    assert load_yaml(path, parse) is first == {"GREETING": "hello"}
    assert parsed == [{"greeting": "hello"}]
