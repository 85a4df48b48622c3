"""The table scripts' shared output step (derelayl.batch.publish)."""

import json

from derelayl.batch import publish

MARKERS = ("<!-- t:start -->", "<!-- t:end -->")


def test_publish_writes_the_table_its_rows_and_the_readme_block(tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text(f"# doc\n\n{MARKERS[0]}\nold table\n{MARKERS[1]}\n\nafter\n")
    table = tmp_path / "reports" / "t.md"
    publish("| a |\n", [{"a": 1}], table, readme, MARKERS)
    assert table.read_text() == "| a |\n"
    assert json.loads(table.with_suffix(".json").read_text()) == [{"a": 1}]
    assert readme.read_text() == f"# doc\n\n{MARKERS[0]}\n| a |\n{MARKERS[1]}\n\nafter\n"
    assert "| a |" in capsys.readouterr().out
    # again with a new table: replaced in place, not appended
    publish("| b |\n", [], table, readme, MARKERS)
    assert readme.read_text() == f"# doc\n\n{MARKERS[0]}\n| b |\n{MARKERS[1]}\n\nafter\n"


def test_publish_without_a_readme_leaves_it_alone_and_appends_missing_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# doc\n")
    publish("| a |\n", [], tmp_path / "t.md")
    assert readme.read_text() == "# doc\n"
    publish("| a |\n", [], tmp_path / "t.md", readme, MARKERS)
    assert readme.read_text() == f"# doc\n\n{MARKERS[0]}\n| a |\n{MARKERS[1]}\n"
