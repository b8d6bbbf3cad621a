"""The Voila apps: the command line, the app notebooks (stripped, preset-first), bad names."""
import nbformat
import pytest

from mono_utils.apps import APPS, app_path, launch_app, voila_command


@pytest.mark.parametrize("name", sorted(APPS))
def test_app_notebooks_are_clean_and_preset_first(name):
    nb = nbformat.read(app_path(name), as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and 'get_preset("default")' in code[0].source
    assert nb.cells[0].cell_type == "markdown" and "Needs" in nb.cells[0].source
    assert all(not c.outputs and c.execution_count is None for c in code), "commit apps without outputs"
    assert "widgets" not in nb.metadata


def test_voila_command_hides_code_and_stays_local():
    cmd = voila_command("steering", 9999)
    assert str(app_path("steering")) in cmd and "--port=9999" in cmd and "--no-browser" in cmd
    assert "--strip_sources=True" in cmd and "--Voila.ip=127.0.0.1" in cmd


def test_bad_app_name_and_port():
    with pytest.raises(ValueError, match="unknown app 'chat': choose one of"):
        launch_app("chat")
    with pytest.raises(ValueError, match="port must be an integer"):
        voila_command("rating", 0)
