"""Shared fixtures: hermetic environment, one local Ray for the whole session (with fake GPUs so the
`num_gpus` path is exercised), and a real S3 API server (moto's server mode) on 127.0.0.1. Shared helpers
(paths, models, readers, the CLI runner, fault tools) are in tests/support."""
from __future__ import annotations

import logging
import os
import sys
import tempfile

import pytest

from tests.support import ROOT

os.environ.update({
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1",
    "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true", "TQDM_DISABLE": "1", "TOKENIZERS_PARALLELISM": "false",
    "RAY_DATA_EXECUTION_NO_PROGRESS_TIMEOUT_S": "300",
})
os.environ.setdefault("HF_HOME", tempfile.mkdtemp(prefix="hf-home-"))


@pytest.fixture(scope="session")
def ray_cluster():
    """One Ray for the session: 4 logical CPUs (over-subscribed on 2 cores) and 2 fake GPUs. Its workers get
    this checkout first on their PYTHONPATH, as the pipeline's own Ray does (driver/run.py): they run this
    checkout's code even where the venv's editable install points at another checkout."""
    import ray
    ray.init(address="local", num_cpus=4, num_gpus=2, object_store_memory=256 * 1024 * 1024,
             include_dashboard=False, log_to_driver=False, logging_level="ERROR",
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}})
    yield ray
    ray.shutdown()


@pytest.fixture(autouse=True)
def _restore_data_context():
    """Tests may tweak Ray Data's context; put it back afterwards."""
    if "ray.data" not in sys.modules:
        yield
        return
    import copy
    import ray.data
    saved = copy.deepcopy(ray.data.DataContext.get_current())
    yield
    ray.data.DataContext._set_current(saved)


@pytest.fixture(scope="session")
def s3_server():
    """A real S3 API on 127.0.0.1 (moto server mode), reachable from Ray workers. Yields the endpoint URL."""
    from moto.server import ThreadedMotoServer
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3fs_client(s3_server):
    import s3fs
    return s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_server}, use_listings_cache=False)


@pytest.fixture(scope="session")
def _fault_s3():
    """A restartable moto S3 server behind a fault-injecting proxy (tests/support/faults/s3_proxy.py)."""
    from tests.support.faults.s3_proxy import FaultProxy, S3Server
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = S3Server()
    proxy = FaultProxy(server.url)
    yield server, proxy
    proxy.stop()
    server.stop()


@pytest.fixture
def fault_s3(_fault_s3):
    """(server, proxy) with an empty fault schedule and log; point `storage.endpoint_url` at `proxy.url`."""
    server, proxy = _fault_s3
    proxy.schedule()
    proxy.log.clear()
    yield server, proxy
    proxy.schedule()
