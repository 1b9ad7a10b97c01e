"""Tests of the studies' JSON helpers."""
import json

from mmdiff_2ndm.studies.json_files import read_json, read_json_folder, write_json


def test_write_then_read_round_trips_and_leaves_no_temporary(tmp_path):
    path = tmp_path / 'sub' / 'a.json'
    write_json(dict(x=1, y=[1.5, 'b']), str(path))
    assert read_json(str(path)) == dict(x=1, y=[1.5, 'b'])
    assert sorted(p.name for p in path.parent.iterdir()) == ['a.json']


def test_read_json_of_a_missing_file_is_none(tmp_path):
    assert read_json(str(tmp_path / 'none.json')) is None


def test_read_json_folder_reads_only_json_files_in_name_order(tmp_path):
    for name, value in (('b.json', 2), ('a.json', 1), ('c.json.tmp', 3), ('d.txt', 4)):
        (tmp_path / name).write_text(json.dumps(dict(v=value)))
    (tmp_path / 'e.json').mkdir()  # a folder named like a file is not read
    (tmp_path / 'e.json' / 'f.json').write_text(json.dumps(dict(v=5)))
    assert read_json_folder(str(tmp_path)) == [dict(v=1), dict(v=2)]
