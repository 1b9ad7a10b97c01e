"""JSON results of the studies, written so that a reader never sees half a file."""
import json
import os
import os.path as osp
from typing import List, Optional


def read_json(path: str) -> Optional[dict]:
    """The JSON at ``path``, or None where there is none (not written yet)."""
    if not osp.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def read_json_folder(folder: str) -> List[dict]:
    """Every ``*.json`` directly in ``folder``, in the order of their file names."""
    paths = [osp.join(folder, name) for name in sorted(os.listdir(folder))]
    return [read_json(path) for path in paths if path.endswith('.json') and osp.isfile(path)]


def write_json(data: dict, path: str) -> None:
    """Writes ``data`` to ``path`` atomically (a temporary file, then a rename), creating
    its folder."""
    os.makedirs(osp.dirname(path) or '.', exist_ok=True)
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, path)
