"""OpenMMLab project files: model-index.yml imports one metafile.yml per config folder, and
together they list every config in the format mim and MMEngine read."""
import glob
import os
import os.path as osp
import re

import pytest
import yaml

REPO = osp.abspath(osp.join(osp.dirname(__file__), '..', '..'))
SIZE_KEYS = ('Parameters (dense)', 'Parameters (pruned)', 'MACs (dense)', 'MACs (pruned)')


def _config_files() -> list:
    """Every config under configs/ (any sub-folder, not _base_), relative to the repo."""
    paths = glob.glob('configs/**/*.py', recursive=True, root_dir=REPO)
    return sorted(p for p in paths if '_base_' not in p.split(os.sep))


def _load(path: str) -> dict:
    with open(osp.join(REPO, path), encoding='utf-8') as f:
        return yaml.safe_load(f)


@pytest.fixture(scope='module')
def metafiles() -> dict:
    """Metafile path (relative to the repo) -> its parsed content, as model-index imports."""
    index = _load('model-index.yml')
    assert set(index) == {'Import'}
    return {path: _load(path) for path in index['Import']}


def _models(metafiles: dict) -> list:
    return [model for meta in metafiles.values() for model in meta['Models']]


def test_every_config_folder_has_an_imported_metafile(metafiles):
    folders = sorted({osp.dirname(p) for p in _config_files()})
    assert sorted(metafiles) == sorted(osp.join(folder, 'metafile.yml') for folder in folders)


def test_every_config_appears_exactly_once_in_its_folders_metafile(metafiles):
    listed = [(path, model['Config']) for path, meta in metafiles.items()
              for model in meta['Models']]
    assert sorted(config for _, config in listed) == _config_files()
    for path, config in listed:
        assert osp.dirname(config) == osp.dirname(path), (path, config)
        assert osp.isfile(osp.join(REPO, config)), config


def test_entries_have_the_model_index_fields(metafiles):
    for path, meta in metafiles.items():
        collections = {c['Name']: c for c in meta['Collections']}
        for collection in collections.values():
            assert collection['Paper']['URL'].startswith('https://arxiv.org/abs/')
            assert osp.isfile(osp.join(REPO, collection['README'])), collection['README']
        for model in meta['Models']:
            assert model['Name'] == osp.splitext(osp.basename(model['Config']))[0]
            assert model['In Collection'] in collections, (path, model['Name'])
            metadata = model['Metadata']
            assert metadata['Training Data'] and metadata['Architecture'], model['Name']
            assert isinstance(metadata['Architecture'], list)
            for key in SIZE_KEYS:  # a measured size or '-'
                assert re.fullmatch(r'-|\d+(\.\d+)?[MG]', str(metadata[key])), (
                    model['Name'], key, metadata[key])
            assert model['Results'], model['Name']
            for result in model['Results']:
                assert result['Task'] and result['Dataset'], model['Name']
                metrics = result['Metrics']
                assert 'FID (published)' in metrics, model['Name']
                for name, value in metrics.items():
                    assert value == '-' or isinstance(value, (int, float)), (name, value)
    names = [model['Name'] for model in _models(metafiles)]
    assert len(names) == len(set(names))


def _readme_rows() -> dict:
    """configs/README.md's table: config file name -> (the row's cells, the cells of the
    row its 'same' / 'as church' cells refer to: the last row above with a teacher of its
    own, or 2ndm_lsun.py)."""
    with open(osp.join(REPO, 'configs', 'README.md'), encoding='utf-8') as f:
        rows = [[c.strip() for c in line.split('|')[1:-1]] for line in f
                if line.startswith('| `2ndm')]
    resolved, main = {}, rows[0]
    for cells in rows:
        if cells[3] != 'same':
            main = cells
        resolved[cells[0].strip('`')] = (cells, main)
    church = resolved['2ndm_lsun.py'][0]
    return {name: (cells, church if any(c.startswith('as church') for c in cells) else main)
            for name, (cells, main) in resolved.items()}


def test_metafile_numbers_are_those_measured_or_published(metafiles):
    """Sizes and published FIDs come from configs/README.md's table (no number of its own)."""
    rows = _readme_rows()
    checked = 0
    for model in metafiles['configs/metafile.yml']['Models']:
        row, referred = rows[osp.basename(model['Config'])]
        for key in SIZE_KEYS:
            value = str(model['Metadata'][key])
            if value != '-':
                assert value in row[4] + referred[4], (model['Name'], key, value, row)
                checked += 1
        for name, value in model['Results'][0]['Metrics'].items():
            if value != '-':
                assert f'{value:.2f}' in row[5] + referred[5], (model['Name'], name, value)
                checked += 1
        assert row[6] == '-' and model['Results'][0]['Metrics']['FID (ours)'] == '-'
    assert checked > 40
    # the digits study's scores and sizes are the README's (Evidence section)
    with open(osp.join(REPO, 'README.md'), encoding='utf-8') as f:
        readme = f.read().replace(',', '')
    for model in metafiles['configs/digits/metafile.yml']['Models']:
        for value in model['Results'][0]['Metrics'].values():
            assert value == '-' or str(value) in readme, (model['Name'], value)
        for key in SIZE_KEYS:
            value = str(model['Metadata'][key])
            assert value == '-' or str(round(float(value[:-1]) * 1e3)) in readme, (key, value)
