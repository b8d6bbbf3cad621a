"""The Voila apps: the command line, the app notebooks (stripped, preset-first), bad names."""
import nbformat
import pytest

from mono_utils.apps import APPS, app_path, is_local, launch_app, voila_command


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
    # every app runs under the capped kernel manager, with the idle culler on
    assert "--VoilaConfiguration.multi_kernel_manager_class=mono_utils.app_server.CappedKernelManager" in cmd
    assert "--CappedKernelManager.max_kernels=8" in cmd and "--CappedKernelManager.cull_idle_timeout=600" in cmd
    assert "--CappedKernelManager.cull_connected=False" in cmd and "--Voila.auto_token=True" not in cmd


def test_beyond_localhost_a_token_is_required_and_read_from_the_environment():
    with pytest.raises(ValueError, match="serving on 0.0.0.0 lets anyone on the network start kernels"):
        voila_command("steering", ip="0.0.0.0")
    cmd = voila_command("steering", ip="0.0.0.0", token="s3cret-class-token")
    assert "--Voila.auto_token=True" in cmd and not any("s3cret" in a for a in cmd)
    assert is_local("127.0.0.1") and is_local("localhost") and not is_local("192.168.1.5")


def test_the_kernel_manager_refuses_past_its_cap_and_hides_the_token():
    import asyncio

    from tornado.web import HTTPError

    from mono_utils.app_server import CappedKernelManager
    started = []

    async def fake_start(self, *a, kernel_id=None, env=None, **kw):
        started.append(env)
        await asyncio.sleep(0.05)          # a kernel takes a while to start: loads overlap
        self._kernels[kernel_id] = object()
        return kernel_id
    km = CappedKernelManager(max_kernels=2)
    base = type(km).__mro__[1]
    original = base.start_kernel
    base.start_kernel = fake_start
    try:
        async def three_loads():
            return await asyncio.gather(*(km.start_kernel(env={"JUPYTER_TOKEN": "t", "MONO_PRESET": "smoke"})
                                          for _ in range(3)), return_exceptions=True)
        # in a thread of its own: after the browser tests, Playwright's sync API leaves an event loop
        # running in this one, where asyncio.run refuses to start
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(1) as pool:
            results = pool.submit(asyncio.run, three_loads()).result()
    finally:
        base.start_kernel = original
    refused = [r for r in results if isinstance(r, HTTPError)]
    assert len(refused) == 1 and refused[0].status_code == 503 and "The app is full" in refused[0].reason
    assert len(started) == 2 and all("JUPYTER_TOKEN" not in e and e["MONO_PRESET"] == "smoke" for e in started)


def test_bad_app_name_and_port():
    with pytest.raises(ValueError, match="unknown app 'chat': choose one of"):
        launch_app("chat")
    with pytest.raises(ValueError, match="port must be an integer"):
        voila_command("rating", 0)
